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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounded_model_id"
    )]
    pub model: Option<String>,
    /// OpenRouter's fallback list, tried in order after the primary model.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "bounded_model_ids"
    )]
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
    /// How many choices to generate; each may be as long as the output cap, so the credit hold
    /// multiplies by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<ChoiceCount>,
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

    /// How many choices the caller asked for (`n`, 1 when absent).
    pub fn choices(&self) -> u32 {
        self.n.map_or(1, |n| n.0)
    }

    /// A cheap prompt-size estimate, for the context-length filter and for billing a stream cut
    /// short before the upstream reported usage: four bytes of text per token, and
    /// [`IMAGE_TOKENS`] per image.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        let size = self.prompt_size();
        (size.bytes.div_ceil(4) + size.images * IMAGE_TOKENS).max(1)
    }

    /// The most tokens the prompt can take, for the credit hold: a token stands for at least one
    /// byte of what it encodes, so each byte counts as a token, plus [`IMAGE_TOKENS`] per image
    /// and [`MESSAGE_TOKENS`] per message for its role markers.
    pub fn prompt_token_bound(&self) -> u64 {
        let size = self.prompt_size();
        size.bytes + size.images * IMAGE_TOKENS + size.messages * MESSAGE_TOKENS
    }

    /// What the prompt is made of: the bytes a tokenizer reads (text, names, tool calls and
    /// results, tool definitions, and any other part whole), images, and messages.
    fn prompt_size(&self) -> PromptSize {
        let mut size = PromptSize {
            bytes: self.tools.as_ref().map_or(0, json_len),
            images: 0,
            messages: self.messages.len() as u64,
        };
        for message in &self.messages {
            size.bytes += message.name.as_ref().map_or(0, |name| name.len() as u64);
            size.bytes += message.tool_calls.as_ref().map_or(0, json_len);
            size.bytes += message
                .tool_call_id
                .as_ref()
                .map_or(0, |id| id.len() as u64);
            match &message.content {
                None => {}
                Some(Content::Text(text)) => size.bytes += text.len() as u64,
                Some(Content::Parts(parts)) => {
                    for part in parts {
                        match part.get("type").and_then(Value::as_str) {
                            Some("image_url") => size.images += 1,
                            Some("text") => {
                                size.bytes += part
                                    .get("text")
                                    .and_then(Value::as_str)
                                    .map_or(0, |text| text.len() as u64);
                            }
                            _ => size.bytes += json_len(part),
                        }
                    }
                }
            }
        }
        size
    }

    /// Whether any message carries an image part, so endpoints without vision can be filtered out.
    pub fn has_images(&self) -> bool {
        self.messages
            .iter()
            .filter_map(|message| message.content.as_ref())
            .any(|content| content.image_count() > 0)
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

    fn image_count(&self) -> usize {
        match self {
            Content::Text(_) => 0,
            Content::Parts(parts) => parts
                .iter()
                .filter(|part| part.get("type").and_then(Value::as_str) == Some("image_url"))
                .count(),
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

struct PromptSize {
    bytes: u64,
    images: u64,
    messages: u64,
}

/// The length of `value` written as JSON, without keeping the text.
fn json_len(value: &impl Serialize) -> u64 {
    let mut counter = ByteCounter(0);
    // Writing to a counter cannot fail; a value that cannot be serialized counts as nothing.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

struct ByteCounter(u64);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Tokens a message's role markers may take, beyond its content (chat templates use a few).
pub const MESSAGE_TOKENS: u64 = 8;

/// What one image may count for in a prompt: more than the largest image costs at the major
/// providers (Anthropic about 1,600 tokens, OpenAI at most 1,105 for high detail after scaling).
pub const IMAGE_TOKENS: u64 = 2_000;

/// The most choices one request may ask for: OpenAI's own maximum for `n`.
pub const MAX_CHOICES: u32 = 128;

/// `n`: between 1 and [`MAX_CHOICES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ChoiceCount(pub u32);

impl<'de> Deserialize<'de> for ChoiceCount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(deserializer)?;
        if (1..=MAX_CHOICES).contains(&n) {
            Ok(ChoiceCount(n))
        } else {
            Err(serde::de::Error::custom(format_args!(
                "n must be between 1 and {MAX_CHOICES}, not {n}"
            )))
        }
    }
}

/// The longest model id a request may name; longer is a 400 that echoes only its beginning.
pub const MAX_MODEL_ID_BYTES: usize = 256;
/// How much of an overlong model id an error repeats.
const ECHOED_MODEL_ID_CHARS: usize = 32;

fn check_model_id<E: serde::de::Error>(id: String) -> Result<String, E> {
    if id.len() <= MAX_MODEL_ID_BYTES {
        return Ok(id);
    }
    let start: String = id.chars().take(ECHOED_MODEL_ID_CHARS).collect();
    Err(E::custom(format_args!(
        "a model id is at most {MAX_MODEL_ID_BYTES} bytes; this one is {} bytes and begins {start:?}",
        id.len()
    )))
}

fn bounded_model_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(check_model_id)
        .transpose()
}

fn bounded_model_ids<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .into_iter()
        .map(check_model_id)
        .collect()
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

    fn parsed(body: &str) -> Result<ChatRequest, String> {
        serde_json::from_str(body).map_err(|error| error.to_string())
    }

    #[test]
    fn n_is_between_1_and_128_and_passed_on() {
        let request = parsed(r#"{"model":"m","n":128,"messages":[]}"#).unwrap();
        assert_eq!(request.choices(), 128);
        assert_eq!(serde_json::to_value(&request).unwrap()["n"], 128);
        assert_eq!(
            parsed(r#"{"model":"m","messages":[]}"#).unwrap().choices(),
            1
        );
        assert_eq!(
            parsed(r#"{"model":"m","n":null,"messages":[]}"#)
                .unwrap()
                .choices(),
            1
        );
        for bad in ["0", "129", "-1", "1.5", "\"2\""] {
            let error = parsed(&format!(r#"{{"model":"m","n":{bad},"messages":[]}}"#)).unwrap_err();
            assert!(error.contains('n'), "{bad}: {error}");
        }
        assert!(
            parsed(r#"{"model":"m","n":129,"messages":[]}"#)
                .unwrap_err()
                .starts_with("n must be between 1 and 128, not 129")
        );
    }

    #[test]
    fn an_overlong_model_id_is_refused_and_only_its_beginning_repeated() {
        let at_most = "m".repeat(MAX_MODEL_ID_BYTES);
        parsed(&format!(r#"{{"model":"{at_most}","messages":[]}}"#)).unwrap();
        let long = format!("{}{}", "a".repeat(40), "b".repeat(10_000));
        for body in [
            format!(r#"{{"model":"{long}","messages":[]}}"#),
            format!(r#"{{"model":"m","models":["x","{long}"],"messages":[]}}"#),
        ] {
            let error = parsed(&body).unwrap_err();
            assert!(error.contains("10040 bytes"), "{error}");
            assert!(error.contains(&"a".repeat(32)), "{error}");
            assert!(
                !error.contains('b'.to_string().repeat(2).as_str()),
                "{error}"
            );
            assert!(error.len() < 200, "{error}");
        }
    }

    #[test]
    fn the_prompt_estimate_counts_tools_and_images() {
        let text =
            parsed(r#"{"model":"m","messages":[{"role":"user","content":"abcdefgh"}]}"#).unwrap();
        assert_eq!(text.estimated_prompt_tokens(), 2);
        let image = r#"{"type":"image_url","image_url":{"url":"https://x/y.png"}}"#;
        let with_images = parsed(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"text","text":"abcdefgh"}},{image},{image}]}}]}}"#
        ))
        .unwrap();
        assert_eq!(with_images.estimated_prompt_tokens(), 2 + 2 * IMAGE_TOKENS);
        let tool = r#"{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}"#;
        let with_tools = parsed(&format!(
            r#"{{"model":"m","tools":[{tool}],"messages":[{{"role":"user","content":"abcdefgh"}}]}}"#
        ))
        .unwrap();
        let tool_bytes = serde_json::to_vec(&with_tools.tools).unwrap().len() as u64;
        assert_eq!(
            with_tools.estimated_prompt_tokens(),
            (8 + tool_bytes).div_ceil(4)
        );
    }

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
