//! Non-streaming chat completion response.

use std::borrow::Cow;

use serde::de::{self, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::Usage;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default = "ChatResponse::object_name")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    /// The provider slug that served the request (OpenRouter's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub choices: Choices,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatResponse {
    fn object_name() -> String {
        "chat.completion".to_owned()
    }

    /// The first choice's finish reason, recorded on the generation.
    pub fn finish_reason(&self) -> Option<&str> {
        match &self.choices {
            Choices::Parsed(choices) => choices.first()?.finish_reason.as_deref(),
            Choices::Upstream { finish_reason, .. } => finish_reason.as_deref(),
        }
    }

    /// The first choice's text, kept on the generation when prompt logging is on.
    pub fn first_content(&self) -> Option<Cow<'_, str>> {
        match &self.choices {
            Choices::Parsed(choices) => choices
                .first()?
                .message
                .content
                .as_deref()
                .map(Cow::Borrowed),
            Choices::Upstream { json, .. } => {
                let mut heads: Vec<ContentHead<'_>> = serde_json::from_str(json.get()).ok()?;
                (!heads.is_empty())
                    .then(|| heads.swap_remove(0).message.content)
                    .flatten()
            }
        }
    }
}

/// A response's `choices`. A decoded OpenAI-format answer keeps the upstream's own JSON: the
/// gateway rewrites only the envelope (`id`, `model`, `provider`, `usage`), so the choices go back
/// to the caller byte for byte, with every field the upstream sent, and cost no re-encoding. An
/// adapter that translates another format builds them instead.
#[derive(Debug, Clone)]
pub enum Choices {
    Parsed(Vec<Choice>),
    Upstream {
        json: Box<RawValue>,
        /// Read once while decoding, which also checks that every choice has a `message`.
        finish_reason: Option<String>,
    },
}

#[cfg(test)]
impl Choices {
    /// The choices an adapter built; a test of a translated answer reads them directly.
    pub fn parsed(&self) -> &[Choice] {
        match self {
            Choices::Parsed(choices) => choices,
            Choices::Upstream { .. } => panic!("these choices are the upstream's own JSON"),
        }
    }
}

impl From<Vec<Choice>> for Choices {
    fn from(choices: Vec<Choice>) -> Self {
        Choices::Parsed(choices)
    }
}

impl Serialize for Choices {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Choices::Parsed(choices) => choices.serialize(serializer),
            Choices::Upstream { json, .. } => json.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Box::<RawValue>::deserialize(deserializer)?;
        let heads: Vec<ChoiceHead> = serde_json::from_str(json.get()).map_err(de::Error::custom)?;
        let finish_reason = heads.into_iter().next().and_then(|head| head.finish_reason);
        Ok(Choices::Upstream {
            json,
            finish_reason,
        })
    }
}

/// What the gateway reads of an upstream choice, and the one field it must have.
#[derive(Deserialize)]
struct ChoiceHead {
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(rename = "message")]
    _message: IgnoredAny,
}

#[derive(Deserialize)]
struct ContentHead<'a> {
    #[serde(borrow)]
    message: MessageHead<'a>,
}

#[derive(Deserialize)]
struct MessageHead<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseMessage {
    #[serde(default = "ResponseMessage::assistant")]
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    /// Reasoning text, OpenRouter's field name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResponseMessage {
    fn assistant() -> String {
        "assistant".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","system_fingerprint":"fp_1","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"there\"","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"Other"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

    #[test]
    fn upstream_choices_go_back_byte_for_byte() {
        let response: ChatResponse = serde_json::from_str(UPSTREAM).unwrap();
        assert_eq!(response.finish_reason(), Some("stop"));
        assert_eq!(response.first_content().as_deref(), Some("Hi \"there\""));
        let back = serde_json::to_string(&response).unwrap();
        let choices =
            &UPSTREAM[UPSTREAM.find("[{").unwrap()..UPSTREAM.find(r#","usage""#).unwrap()];
        assert!(back.contains(&format!(r#""choices":{choices}"#)), "{back}");
        assert!(back.contains(r#""system_fingerprint":"fp_1""#), "{back}");
    }

    #[test]
    fn a_choice_without_a_message_is_not_an_answer() {
        let body = r#"{"choices":[{"index":0,"finish_reason":"stop"}]}"#;
        let error = serde_json::from_str::<ChatResponse>(body).unwrap_err();
        assert!(error.to_string().contains("message"), "{error}");
        assert!(serde_json::from_str::<ChatResponse>(r#"{"choices":{}}"#).is_err());
        assert!(serde_json::from_str::<ChatResponse>(r#"{"id":"x"}"#).is_err());
    }

    #[test]
    fn no_choices_means_no_finish_reason_and_no_text() {
        let response: ChatResponse = serde_json::from_str(r#"{"choices":[]}"#).unwrap();
        assert_eq!(response.finish_reason(), None);
        assert_eq!(response.first_content(), None);
        let response: ChatResponse =
            serde_json::from_str(r#"{"choices":[{"message":{"content":null}}]}"#).unwrap();
        assert_eq!(response.first_content(), None);
    }
}
