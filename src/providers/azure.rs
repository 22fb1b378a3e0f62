//! Azure OpenAI: OpenAI's wire format (built and read by [`super::openai`]) sent to a deployment
//! URL with an `api-key` header. The endpoint's upstream model name is the deployment name.

use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::Value;

use super::openai::{ChunkDecoder, decode_error, decode_response, encode_body};
use super::{
    Provider, ProviderError, SseEvent, StreamDecoder, Target, UpstreamError, UpstreamRequest,
};
use crate::openai::{ChatChunk, ChatRequest, ChatResponse};

const API_KEY: HeaderName = HeaderName::from_static("api-key");

pub(super) struct Azure {
    /// `{base_url}/openai/deployments/`: the deployment and the query follow per request.
    deployments_url: String,
    /// `/chat/completions?api-version=...`, built once.
    chat_path: String,
    api_key: Option<HeaderValue>,
}

impl Azure {
    pub(super) fn new(
        base_url: &str,
        api_version: &str,
        api_key: Option<&str>,
    ) -> Result<Self, ProviderError> {
        let api_key = api_key.map(super::secret_header).transpose()?;
        if !api_version.chars().all(is_url_safe) {
            return Err(ProviderError::Unsupported(format!(
                "invalid api_version {api_version:?}"
            )));
        }
        let deployments_url = format!("{}/openai/deployments/", base_url.trim_end_matches('/'));
        super::endpoint_uri(deployments_url.clone())?;
        Ok(Self {
            deployments_url,
            chat_path: format!("/chat/completions?api-version={api_version}"),
            api_key,
        })
    }

    fn chat_uri(&self, deployment: &str) -> Result<http::Uri, ProviderError> {
        // Azure's deployment names are letters, digits, '-', '_' and '.', so anything else is a
        // catalog mistake rather than something to escape.
        if deployment.is_empty() || !deployment.chars().all(is_url_safe) {
            return Err(ProviderError::Unsupported(format!(
                "{deployment:?} is not an Azure deployment name"
            )));
        }
        let url = format!("{}{deployment}{}", self.deployments_url, self.chat_path);
        http::Uri::try_from(url)
            .map_err(|error| ProviderError::Unsupported(format!("invalid deployment URL: {error}")))
    }
}

fn is_url_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.".contains(c)
}

impl Provider for Azure {
    fn build_request(
        &self,
        request: &ChatRequest,
        target: Target<'_>,
    ) -> Result<UpstreamRequest, ProviderError> {
        let credential = self.api_key.as_ref().map(|key| (API_KEY, key));
        Ok(UpstreamRequest::Http {
            uri: self.chat_uri(target.upstream_model)?,
            headers: super::json_headers(credential),
            body: encode_body(request, target, None)?,
        })
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, ProviderError> {
        decode_response(body)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(FilteredChunkDecoder::default())
    }

    fn parse_error(&self, status: StatusCode, body: &[u8]) -> UpstreamError {
        decode_error(status, body)
    }
}

/// OpenAI's chunk decoder, plus Azure's prompt filter results: Azure sends them in a first chunk
/// without choices, which the gateway drops like any choice-less chunk, so they are carried onto
/// the next chunk that has choices.
#[derive(Default)]
struct FilteredChunkDecoder {
    chunks: ChunkDecoder,
    prompt_filter_results: Option<Value>,
}

const PROMPT_FILTER_RESULTS: &str = "prompt_filter_results";

impl StreamDecoder for FilteredChunkDecoder {
    fn decode(&mut self, event: &SseEvent) -> Result<Option<ChatChunk>, UpstreamError> {
        let Some(mut chunk) = self.chunks.decode(event)? else {
            return Ok(None);
        };
        if chunk.choices.is_empty() {
            if let Some(results) = chunk.extra.remove(PROMPT_FILTER_RESULTS) {
                self.prompt_filter_results = Some(results);
                if chunk.usage.is_none() {
                    return Ok(None);
                }
            }
        } else if let Some(results) = self.prompt_filter_results.take() {
            chunk
                .extra
                .insert(PROMPT_FILTER_RESULTS.to_owned(), results);
        }
        Ok(Some(chunk))
    }

    fn finished(&self) -> bool {
        self.chunks.finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Capabilities, UpstreamErrorKind};

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/azure/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing fixture {path}"))
    }

    fn target() -> Target<'static> {
        static CAPABILITIES: std::sync::LazyLock<Capabilities> =
            std::sync::LazyLock::new(Capabilities::default);
        Target {
            upstream_model: "gpt-4o-prod",
            max_output: None,
            capabilities: &CAPABILITIES,
        }
    }

    fn azure() -> Azure {
        Azure::new(
            "https://contoso.openai.azure.com/",
            "2024-10-21",
            Some("azure-secret"),
        )
        .unwrap()
    }

    fn request(body: &str) -> ChatRequest {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn requests_go_to_the_deployment_url_with_the_api_key_header() {
        let built = azure()
            .build_request(
                &request(
                    r#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
                ),
                target(),
            )
            .unwrap();
        let UpstreamRequest::Http { uri, headers, body } = built else {
            panic!("expected an HTTP request");
        };
        assert_eq!(
            uri.to_string(),
            "https://contoso.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
        );
        let api_key = headers.iter().find(|(name, _)| name == "api-key").unwrap();
        assert_eq!(api_key.1, "azure-secret");
        assert!(api_key.1.is_sensitive());
        assert!(
            !headers
                .iter()
                .any(|(name, _)| name == http::header::AUTHORIZATION)
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["messages"][0]["content"], "hi");
    }

    #[test]
    fn the_body_is_openais_with_usage_requested_on_streams() {
        let built = azure()
            .build_request(
                &request(
                    r#"{"model":"openai/gpt-4o","stream":true,"provider":{"order":["azure"]},"messages":[{"role":"user","content":"hi"}],"seed":3}"#,
                ),
                target(),
            )
            .unwrap();
        let UpstreamRequest::Http { body, .. } = built else {
            panic!("expected an HTTP request");
        };
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["seed"], 3);
        assert!(body.get("provider").is_none());
    }

    #[test]
    fn deployment_names_that_would_break_the_url_are_refused() {
        let target = Target {
            upstream_model: "../admin?x=",
            ..target()
        };
        let error = azure()
            .build_request(
                &request(r#"{"messages":[{"role":"user","content":"hi"}]}"#),
                target,
            )
            .unwrap_err();
        assert!(matches!(error, ProviderError::Unsupported(_)));
    }

    #[test]
    fn content_filter_results_survive_a_non_streaming_response() {
        let response = azure()
            .parse_response(fixture("chat_completion_filtered.json").as_bytes())
            .unwrap();
        assert_eq!(response.finish_reason(), Some("content_filter"));
        assert!(response.extra.contains_key(PROMPT_FILTER_RESULTS));
        let back = serde_json::to_value(&response).unwrap();
        assert!(back["choices"][0]["content_filter_results"].is_object());
        assert_eq!(
            back["prompt_filter_results"][0]["content_filter_results"]["hate"]["severity"],
            "safe"
        );
    }

    #[test]
    fn prompt_filter_results_ride_on_the_first_chunk_with_choices() {
        let mut decoder = azure().stream_decoder();
        let mut parser = crate::providers::sse::SseParser::default();
        parser.push(fixture("chat_stream.sse").as_bytes());
        let mut chunks = Vec::new();
        while let Some(event) = parser.next_event() {
            chunks.extend(decoder.decode(&event).unwrap());
        }
        assert!(decoder.finished());
        assert!(chunks[0].extra.contains_key(PROMPT_FILTER_RESULTS));
        assert_eq!(
            chunks[0].choices[0].delta.role.as_deref(),
            Some("assistant")
        );
        let text: String = chunks
            .iter()
            .filter_map(|chunk| chunk.choices.first())
            .filter_map(|choice| choice.delta.content.as_deref())
            .collect();
        assert_eq!(text, "Hello there.");
        assert!(chunks.last().unwrap().usage.is_some());
    }

    #[test]
    fn content_filter_errors_are_bad_requests_that_keep_azures_explanation() {
        let error = azure().parse_error(
            StatusCode::BAD_REQUEST,
            fixture("content_filter_error.json").as_bytes(),
        );
        assert_eq!(error.kind, UpstreamErrorKind::BadRequest);
        assert!(
            error.message.contains("content management policy"),
            "{}",
            error.message
        );
    }
}
