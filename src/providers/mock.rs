//! The built-in `mock` provider: a deterministic echo model that answers in-process in OpenAI's
//! wire format, so demos, tests and benchmarks run with no network and no API keys.

use std::fmt::Write as _;

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

use super::openai::{ChunkDecoder, decode_error, decode_response};
use super::{Provider, ProviderError, StreamDecoder, Target, UpstreamError, UpstreamRequest};
use crate::openai::{ChatRequest, ChatResponse, Role};

pub(super) struct Mock;

/// What the echo model says: the last user message, cut to `max_tokens` words.
struct Echo {
    words: Vec<String>,
    prompt_tokens: usize,
    finish_reason: &'static str,
}

impl Echo {
    fn answer(request: &ChatRequest, target: Target<'_>) -> Echo {
        let text_of = |role: Option<Role>| {
            request
                .messages
                .iter()
                .filter(move |message| role.is_none_or(|role| message.role == role))
                .filter_map(|message| message.content.as_ref().map(|content| content.text()))
        };
        let prompt_tokens = text_of(None)
            .map(|text| text.split_whitespace().count())
            .sum::<usize>();
        let last_user = text_of(Some(Role::User)).next_back().unwrap_or_default();
        let mut words: Vec<String> = last_user.split_whitespace().map(str::to_owned).collect();
        if words.is_empty() {
            words.push("(silence)".to_owned());
        }
        let limit = request
            .max_output_tokens()
            .or(target.max_output)
            .map_or(usize::MAX, |n| n as usize);
        let finish_reason = if words.len() > limit {
            words.truncate(limit);
            "length"
        } else {
            "stop"
        };
        Echo {
            words,
            prompt_tokens: prompt_tokens.max(1),
            finish_reason,
        }
    }

    fn usage(&self) -> serde_json::Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.words.len(),
            "total_tokens": self.prompt_tokens + self.words.len(),
        })
    }
}

impl Provider for Mock {
    fn build_request(
        &self,
        request: &ChatRequest,
        target: Target<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        let echo = Echo::answer(request, target);
        let model = target.upstream_model;
        let body = if request.stream {
            let mut sse = String::new();
            for (index, word) in echo.words.iter().enumerate() {
                let delta = match index {
                    0 => json!({"role": "assistant", "content": word}),
                    _ => json!({"content": format!(" {word}")}),
                };
                let chunk = json!({"id": "mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
                let _ = write!(sse, "data: {chunk}\n\n");
            }
            let last = json!({"id": "mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": echo.finish_reason}]});
            let usage = json!({"id": "mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [], "usage": echo.usage()});
            let _ = write!(sse, "data: {last}\n\ndata: {usage}\n\ndata: [DONE]\n\n");
            Bytes::from(sse)
        } else {
            let response = json!({
                "id": "mock", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "finish_reason": echo.finish_reason,
                    "message": {"role": "assistant", "content": echo.words.join(" ")}}],
                "usage": echo.usage(),
            });
            Bytes::from(response.to_string())
        };
        Ok(UpstreamRequest::Local {
            status: StatusCode::OK,
            body,
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

    fn ask(body: &str) -> Bytes {
        let request: ChatRequest = serde_json::from_str(body).unwrap();
        let capabilities = Capabilities::default();
        let target = Target {
            upstream_model: "echo",
            max_output: None,
            capabilities: &capabilities,
        };
        match Mock.build_request(&request, target).unwrap() {
            UpstreamRequest::Local { body, .. } => body,
            UpstreamRequest::Http { .. } => panic!("the mock never uses the network"),
        }
    }

    #[test]
    fn the_echo_model_repeats_the_last_user_message_with_usage() {
        let body = ask(
            r#"{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there"}]}"#,
        );
        let response = Mock.parse_response(&body).unwrap();
        assert_eq!(response.first_content().as_deref(), Some("hello there"));
        let usage = response.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (4, 2));
    }

    #[test]
    fn max_tokens_cuts_the_echo_and_reports_length() {
        let body =
            ask(r#"{"max_tokens":1,"messages":[{"role":"user","content":"one two three"}]}"#);
        let response = Mock.parse_response(&body).unwrap();
        assert_eq!(response.finish_reason(), Some("length"));
    }
}
