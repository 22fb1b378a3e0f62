//! OpenAI Chat Completions and every API that copies it (`openai`, `openai-compatible`): the
//! request passes through with the upstream model name, OpenRouter-only fields and the fields the
//! provider's preset refuses removed, and usage requested on streams.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::presets::Preset;
use super::{
    Provider, ProviderError, SseEvent, StreamDecoder, Target, UpstreamError, UpstreamErrorKind,
    UpstreamRequest,
};
use crate::openai::{ChatChunk, ChatRequest, ChatResponse, Message};

pub(super) struct OpenAi {
    /// Parsed once: cloning a `Uri` is a reference count, parsing one is not.
    chat_uri: http::Uri,
    authorization: Option<HeaderValue>,
    /// What the provider refuses, for `openai-compatible` providers with a preset.
    preset: Option<&'static Preset>,
}

impl OpenAi {
    pub(super) fn new(
        base_url: &str,
        api_key: Option<&str>,
        preset: Option<&'static Preset>,
    ) -> Result<Self, ProviderError> {
        let authorization = api_key
            .map(|key| super::secret_header(&format!("Bearer {key}")))
            .transpose()?;
        let chat_url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        let chat_uri = super::endpoint_uri(chat_url)?;
        Ok(Self {
            chat_uri,
            authorization,
            preset,
        })
    }
}

/// The upstream body, borrowing everything from the canonical request.
#[derive(Serialize)]
struct UpstreamBody<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [Value]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a Value>,
    /// OpenRouter's `reasoning.effort` is OpenAI's `reasoning_effort`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(flatten)]
    extra: Unrefused<'a>,
}

/// The request's unknown fields without the ones the provider refuses, filtered while they are
/// written so the borrowed map is never copied.
struct Unrefused<'a> {
    fields: &'a Map<String, Value>,
    refused: &'static [&'static str],
}

impl Serialize for Unrefused<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.fields {
            if !self.refused.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// The body OpenAI's API expects; with a `preset`, without the fields that provider refuses.
pub(super) fn encode_body(
    request: &ChatRequest,
    target: Target<'_>,
    preset: Option<&Preset>,
) -> Result<Bytes, ProviderError> {
    let refused: &'static [&'static str] = preset.map_or(&[], |preset| preset.rejects);
    let sent = |field: &str| !refused.contains(&field);
    let stream_options = (request.stream && sent("stream_options")).then(|| {
        let mut options = request
            .stream_options
            .as_ref()
            .map(|options| options.extra.clone())
            .unwrap_or_default();
        // Usage is what the gateway bills from, so it is always requested.
        options.insert("include_usage".to_owned(), Value::Bool(true));
        Value::Object(options)
    });
    let (max_tokens, max_completion_tokens) =
        if preset.is_some_and(|preset| preset.wants_max_tokens) {
            (request.max_output_tokens(), None)
        } else {
            (request.max_tokens, request.max_completion_tokens)
        };
    let body = UpstreamBody {
        model: target.upstream_model,
        messages: &request.messages,
        stream: request.stream,
        stream_options,
        max_tokens: max_tokens.filter(|_| sent("max_tokens")),
        max_completion_tokens: max_completion_tokens.filter(|_| sent("max_completion_tokens")),
        n: request.n.map(|n| n.0).filter(|_| sent("n")),
        temperature: request.temperature.filter(|_| sent("temperature")),
        top_p: request.top_p.filter(|_| sent("top_p")),
        tools: request.tools.as_deref().filter(|_| sent("tools")),
        tool_choice: request.tool_choice.as_ref().filter(|_| sent("tool_choice")),
        response_format: request
            .response_format
            .as_ref()
            .filter(|_| sent("response_format")),
        reasoning_effort: request
            .reasoning
            .as_ref()
            .and_then(|reasoning| reasoning.get("effort"))
            .filter(|_| sent("reasoning_effort")),
        user: request.user.as_deref().filter(|_| sent("user")),
        extra: Unrefused {
            fields: &request.extra,
            refused,
        },
    };
    // Room for a typical request up front; `to_vec` would start at 128 bytes and double.
    let mut out = Vec::with_capacity(1024);
    serde_json::to_writer(&mut out, &body)?;
    Ok(Bytes::from(out))
}

pub(super) fn decode_response(body: &[u8]) -> Result<ChatResponse, ProviderError> {
    serde_json::from_slice(body).map_err(|error| ProviderError::InvalidResponse(error.to_string()))
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<Value>,
}

pub(super) fn decode_error(status: StatusCode, body: &[u8]) -> UpstreamError {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|body| body.error);
    let message = detail.as_ref().and_then(|detail| detail.message.as_deref());
    let error = UpstreamError::from_status(status, message);
    let code = detail
        .as_ref()
        .and_then(|detail| detail.code.as_ref())
        .and_then(Value::as_str);
    if code == Some("context_length_exceeded") {
        return error.with_kind(UpstreamErrorKind::ContextLength);
    }
    error
}

/// Decodes `data: {chunk}` events until `data: [DONE]`.
#[derive(Default)]
pub(super) struct ChunkDecoder {
    done: bool,
}

impl StreamDecoder for ChunkDecoder {
    fn decode(&mut self, event: &SseEvent) -> Result<Option<ChatChunk>, UpstreamError> {
        if event.data == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        if event.data.is_empty() {
            return Ok(None);
        }
        let chunk: ChatChunk = serde_json::from_str(&event.data).map_err(|error| {
            UpstreamError::new(
                UpstreamErrorKind::Protocol,
                format!("unreadable stream chunk: {error}"),
            )
        })?;
        if chunk.error.is_some() || (chunk.choices.is_empty() && chunk.extra.contains_key("error"))
        {
            return Err(stream_error(&event.data));
        }
        Ok(Some(chunk))
    }

    fn finished(&self) -> bool {
        self.done
    }
}

/// An error reported inside the stream (`data: {"error": {...}}`), classified like an HTTP one.
fn stream_error(data: &str) -> UpstreamError {
    let status = serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|value| value.pointer("/error/code").and_then(Value::as_u64))
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    UpstreamError::from_status(status, None)
}

impl Provider for OpenAi {
    fn build_request(
        &self,
        request: &ChatRequest,
        target: Target<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        let credential = self
            .authorization
            .as_ref()
            .map(|authorization| (header::AUTHORIZATION, authorization));
        Ok(UpstreamRequest::Http {
            uri: self.chat_uri.clone(),
            headers: super::json_headers(credential),
            body: encode_body(request, target, self.preset)?,
        })
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        decode_response(body)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChunkDecoder::default())
    }

    fn parse_error(&self, status: StatusCode, body: &[u8]) -> UpstreamError {
        decode_error(status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Capabilities;

    fn target() -> Target<'static> {
        static CAPABILITIES: std::sync::LazyLock<Capabilities> =
            std::sync::LazyLock::new(Capabilities::default);
        Target {
            upstream_model: "gpt-4o-2024-08-06",
            max_output: None,
            capabilities: &CAPABILITIES,
        }
    }

    #[test]
    fn the_body_maps_the_model_drops_openrouter_fields_and_keeps_unknown_ones() {
        let request: ChatRequest = serde_json::from_str(
            r#"{"model":"openai/gpt-4o","models":["x"],"provider":{"order":["a"]},"messages":[{"role":"user","content":"hi"}],"seed":3,"stream":true}"#,
        )
        .unwrap();
        let body: Value =
            serde_json::from_slice(&encode_body(&request, target(), None).unwrap()).unwrap();
        assert_eq!(body["model"], "gpt-4o-2024-08-06");
        assert_eq!(body["seed"], 3);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert!(body.get("models").is_none() && body.get("provider").is_none());
    }

    fn encoded_for(preset: &Preset, body: &str) -> Value {
        let request: ChatRequest = serde_json::from_str(body).unwrap();
        serde_json::from_slice(&encode_body(&request, target(), Some(preset)).unwrap()).unwrap()
    }

    #[test]
    fn a_preset_never_receives_the_fields_it_refuses() {
        let body = encoded_for(
            &crate::providers::presets::MISTRAL,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"user":"u-1",
               "logit_bias":{"1":2},"logprobs":true,"store":true,"seed":7,"temperature":0.3,
               "max_completion_tokens":50}"#,
        );
        for refused in [
            "user",
            "logit_bias",
            "logprobs",
            "store",
            "max_completion_tokens",
        ] {
            assert!(body.get(refused).is_none(), "{refused} sent: {body}");
        }
        assert_eq!(body["seed"], 7, "other unknown fields pass");
        assert_eq!(body["temperature"], 0.3);
        assert_eq!(body["max_tokens"], 50, "the cap moves to max_tokens");
    }

    #[test]
    fn filtering_the_borrowed_extra_map_keeps_it_intact() {
        let request: ChatRequest =
            serde_json::from_str(r#"{"model":"m","messages":[],"top_logprobs":3,"top_k":5}"#)
                .unwrap();
        let body: Value = serde_json::from_slice(
            &encode_body(&request, target(), Some(&crate::providers::presets::GROQ)).unwrap(),
        )
        .unwrap();
        assert!(body.get("top_logprobs").is_none());
        assert_eq!(body["top_k"], 5);
        assert_eq!(request.extra.len(), 2, "the request itself is untouched");
    }

    #[test]
    fn without_a_preset_max_completion_tokens_passes_as_written() {
        let body = encoded_for(
            &crate::providers::presets::OPENAI,
            r#"{"model":"m","messages":[],"max_completion_tokens":50,"logprobs":true}"#,
        );
        assert_eq!(body["max_completion_tokens"], 50);
        assert!(body.get("max_tokens").is_none());
        assert_eq!(body["logprobs"], true);
    }

    #[test]
    fn context_length_errors_are_recognised() {
        let body = br#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        let error = decode_error(StatusCode::BAD_REQUEST, body);
        assert_eq!(error.kind, UpstreamErrorKind::ContextLength);
    }

    #[test]
    fn the_decoder_stops_at_done_and_reports_in_stream_errors() {
        let mut decoder = ChunkDecoder::default();
        let chunk = SseEvent {
            event: None,
            data: r#"{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}]}"#.into(),
        };
        assert!(decoder.decode(&chunk).unwrap().is_some());
        let error = SseEvent {
            event: None,
            data: r#"{"error":{"message":"boom","code":500}}"#.into(),
        };
        assert_eq!(
            decoder.decode(&error).unwrap_err().kind,
            UpstreamErrorKind::Server
        );
        decoder
            .decode(&SseEvent {
                event: None,
                data: "[DONE]".into(),
            })
            .unwrap();
        assert!(decoder.finished());
    }
}
