//! One streamed `chat.completion.chunk`, including the gateway's in-stream error shape.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Usage;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "ChatChunk::object_name")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Set only on the gateway's in-stream error chunk (OpenRouter's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ChunkError>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatChunk {
    fn object_name() -> String {
        "chat.completion.chunk".to_owned()
    }

    /// A chunk with no choices, for the final usage chunk and the error chunk to fill in.
    pub fn empty(id: &str, created: i64, model: &str, provider: Option<&str>) -> Self {
        Self {
            id: id.to_owned(),
            object: Self::object_name(),
            created,
            model: model.to_owned(),
            provider: provider.map(str::to_owned),
            choices: Vec::new(),
            usage: None,
            error: None,
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkError {
    pub message: String,
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}
