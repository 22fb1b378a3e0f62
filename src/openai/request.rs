//! `POST /v1/chat/completions` request body, with OpenRouter's `models`, `provider` and `reasoning`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::is_false;

/// The model suffix that asks for a model's zero-priced endpoints, under the free-tier limits.
pub const FREE_SUFFIX: &str = ":free";

/// A chat request. Fields the gateway acts on are typed (so a wrong type is a 400); every other
/// field is kept in `extra` and passed through untouched to OpenAI-compatible upstreams.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// OpenRouter's fallback list, tried in order after the primary model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// OpenRouter's routing preferences; never sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderPreferences>,
    /// OpenRouter's unified reasoning control (`effort`, `max_tokens`, `exclude`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Value>,
    /// OpenRouter's usage accounting switch; usage is always returned, so it is only accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// The output cap the caller asked for, under either of OpenAI's names.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The models to try in order: `model` (or `models[0]`), then the rest of `models`, once each.
    pub fn model_candidates(&self) -> Vec<&str> {
        let mut candidates: Vec<&str> = Vec::with_capacity(1 + self.models.len());
        for id in self.model.iter().chain(self.models.iter()) {
            if !candidates.contains(&id.as_str()) {
                candidates.push(id);
            }
        }
        candidates
    }

    /// Whether any candidate model asks for the free tier (`:free`): the whole request is then
    /// held to the free-tier rate limits, since any candidate may be the one that serves it.
    pub fn asks_for_free(&self) -> bool {
        self.model
            .iter()
            .chain(&self.models)
            .any(|id| id.ends_with(FREE_SUFFIX))
    }

    /// A cheap prompt-size estimate (four bytes of text per token), for the context-length filter
    /// and for billing a stream cut short before the upstream reported usage.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        let characters: usize = self
            .messages
            .iter()
            .filter_map(|message| message.content.as_ref())
            .map(Content::text_len)
            .sum();
        (characters as u64).div_ceil(4).max(1)
    }

    /// Whether any message carries an image part, so endpoints without vision can be filtered out.
    pub fn has_images(&self) -> bool {
        self.messages.iter().any(|message| match &message.content {
            Some(Content::Parts(parts)) => parts
                .iter()
                .any(|part| part.get("type").and_then(Value::as_str) == Some("image_url")),
            _ => false,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A message's content: a plain string or a list of typed parts (`text`, `image_url`, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Map<String, Value>>),
}

impl Content {
    /// The length in bytes of the content's text, without building it.
    pub fn text_len(&self) -> usize {
        match self {
            Content::Text(text) => text.len(),
            Content::Parts(parts) => part_texts(parts).map(str::len).sum(),
        }
    }

    /// The text of the content, with parts' text joined; images contribute nothing.
    pub fn text(&self) -> String {
        match self {
            Content::Text(text) => text.clone(),
            Content::Parts(parts) => part_texts(parts).collect::<Vec<_>>().join(" "),
        }
    }
}

fn part_texts(parts: &[Map<String, Value>]) -> impl Iterator<Item = &str> {
    parts
        .iter()
        .filter_map(|part| part.get("text").and_then(Value::as_str))
}

/// OpenRouter's `provider` object. Unknown fields are ignored, as OpenRouter does.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProviderPreferences {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_fallbacks: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_parameters: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_collection: Option<DataCollectionPreference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<SortPreference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<MaxPrice>,
    /// Tokens per second; endpoints below it (or not yet measured) are tried last, never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_min_throughput: Option<f64>,
    /// Seconds to the first token; endpoints above it (or not yet measured) are tried last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_max_latency: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataCollectionPreference {
    Allow,
    Deny,
}

/// What `sort` (and the `:floor` and `:nitro` suffixes) order endpoints by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    Price,
    Throughput,
    Latency,
}

/// Whether a sort keeps the `models` fallback order (`model`) or mixes all models' endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortPartition {
    #[default]
    Model,
    None,
}

/// `sort`: a bare strategy (`"price"`) or `{ "by": "price", "partition": "model" | "none" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SortPreference {
    By(SortBy),
    Detailed {
        by: SortBy,
        #[serde(default)]
        partition: SortPartition,
    },
}

impl SortPreference {
    pub fn by(self) -> SortBy {
        match self {
            SortPreference::By(by) | SortPreference::Detailed { by, .. } => by,
        }
    }

    pub fn partition(self) -> SortPartition {
        match self {
            SortPreference::By(_) => SortPartition::default(),
            SortPreference::Detailed { partition, .. } => partition,
        }
    }
}

/// Hard price caps in USD per million tokens. Kept as JSON numbers (parsed exactly into prices
/// by routing), never converted through floats.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MaxPrice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<serde_json::Number>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi","x_msg":1}],"seed":7,"logit_bias":{"1":2}}"#;
        let request: ChatRequest = serde_json::from_str(body).unwrap();
        let back = serde_json::to_value(&request).unwrap();
        assert_eq!(back["seed"], 7);
        assert_eq!(back["logit_bias"]["1"], 2);
        assert_eq!(back["messages"][0]["x_msg"], 1);
    }

    #[test]
    fn model_candidates_put_the_primary_first_and_skip_duplicates() {
        let request: ChatRequest =
            serde_json::from_str(r#"{"model":"a","models":["b","a","c"],"messages":[]}"#).unwrap();
        assert_eq!(request.model_candidates(), ["a", "b", "c"]);
    }

    #[test]
    fn a_request_asks_for_free_when_model_or_any_fallback_ends_with_free() {
        let asks = |body: &str| {
            serde_json::from_str::<ChatRequest>(body)
                .unwrap()
                .asks_for_free()
        };
        assert!(asks(r#"{"model":"a/b:free","messages":[]}"#));
        assert!(asks(
            r#"{"model":"a/b","models":["c/d:free"],"messages":[]}"#
        ));
        assert!(!asks(
            r#"{"model":"a/b:floor","models":["free/d"],"messages":[]}"#
        ));
        assert!(!asks(r#"{"model":"a/b:freeze","messages":[]}"#));
    }

    #[test]
    fn a_missing_model_falls_back_to_the_first_of_models() {
        let request: ChatRequest =
            serde_json::from_str(r#"{"models":["b","c"],"messages":[]}"#).unwrap();
        assert_eq!(request.model_candidates(), ["b", "c"]);
    }

    #[test]
    fn provider_preferences_are_typed_and_unknown_fields_ignored() {
        let request: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[],"provider":{"sort":{"by":"latency","partition":"none"},
                "preferred_min_throughput":50,"quantizations":["fp8"]}}"#,
        )
        .unwrap();
        let provider = request.provider.unwrap();
        let sort = provider.sort.unwrap();
        assert_eq!(
            (sort.by(), sort.partition()),
            (SortBy::Latency, SortPartition::None)
        );
        assert_eq!(provider.preferred_min_throughput, Some(50.0));
        for wrong in [
            r#"{"sort":"cheapest"}"#,
            r#"{"sort":{"by":"price","partition":"all"}}"#,
            r#"{"preferred_max_latency":"fast"}"#,
            r#"{"max_price":{"prompt":"1"}}"#,
        ] {
            let body = format!(r#"{{"model":"m","messages":[],"provider":{wrong}}}"#);
            assert!(
                serde_json::from_str::<ChatRequest>(&body).is_err(),
                "{wrong}"
            );
        }
    }

    #[test]
    fn wrong_types_are_rejected() {
        assert!(serde_json::from_str::<ChatRequest>(r#"{"model":"m","messages":"hi"}"#).is_err());
        assert!(
            serde_json::from_str::<ChatRequest>(r#"{"model":"m","messages":[],"stream":"yes"}"#)
                .is_err()
        );
    }
}
