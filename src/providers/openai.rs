//! OpenAI Chat Completions and every API that copies it (`openai`, `openai-compatible`): the
//! request passes through with the upstream model name, OpenRouter-only fields removed and usage
//! requested on streams.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    Provider, ProviderError, SseEvent, StreamDecoder, Target, UpstreamError, UpstreamErrorKind,
    UpstreamRequest,
};
use crate::openai::{ChatChunk, ChatRequest, ChatResponse, Message};

pub(super) struct OpenAi {
    /// Parsed once: cloning a `Uri` is a reference count, parsing one is not.
    chat_uri: http::Uri,
    authorization: Option<HeaderValue>,
}

impl OpenAi {
    pub(super) fn new(base_url: &str, api_key: Option<&str>) -> Result<Self, ProviderError> {
        let authorization = api_key
            .map(|key| {
                let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                    ProviderError::Unsupported("the API key contains invalid characters".into())
                })?;
                value.set_sensitive(true);
                Ok::<_, ProviderError>(value)
            })
            .transpose()?;
        let chat_url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        let chat_uri = http::Uri::try_from(chat_url)
            .map_err(|error| ProviderError::Unsupported(format!("invalid base_url: {error}")))?;
        Ok(Self {
            chat_uri,
            authorization,
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
    extra: &'a Map<String, Value>,
}

pub(super) fn encode_body(
    request: &ChatRequest,
    target: Target<'_>,
) -> Result<Bytes, ProviderError> {
    let stream_options = request.stream.then(|| {
        let mut options = request
            .stream_options
            .as_ref()
            .map(|options| options.extra.clone())
            .unwrap_or_default();
        // Usage is what the gateway bills from, so it is always requested.
        options.insert("include_usage".to_owned(), Value::Bool(true));
        Value::Object(options)
    });
    let body = UpstreamBody {
        model: target.upstream_model,
        messages: &request.messages,
        stream: request.stream,
        stream_options,
        max_tokens: request.max_tokens,
        max_completion_tokens: request.max_completion_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        tools: request.tools.as_deref(),
        tool_choice: request.tool_choice.as_ref(),
        response_format: request.response_format.as_ref(),
        reasoning_effort: request
            .reasoning
            .as_ref()
            .and_then(|reasoning| reasoning.get("effort")),
        user: request.user.as_deref(),
        extra: &request.extra,
    };
    Ok(Bytes::from(serde_json::to_vec(&body)?))
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
        let mut headers: Vec<(HeaderName, HeaderValue)> = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        if let Some(authorization) = &self.authorization {
            headers.push((header::AUTHORIZATION, authorization.clone()));
        }
        Ok(UpstreamRequest::Http {
            uri: self.chat_uri.clone(),
            headers,
            body: encode_body(request, target)?,
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
            serde_json::from_slice(&encode_body(&request, target()).unwrap()).unwrap();
        assert_eq!(body["model"], "gpt-4o-2024-08-06");
        assert_eq!(body["seed"], 3);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert!(body.get("models").is_none() && body.get("provider").is_none());
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
