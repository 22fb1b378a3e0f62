//! The only place that knows a provider's wire format. A [`Provider`] translates between the
//! canonical [`crate::openai`] types and one upstream API and does no I/O; [`upstream`] is the only
//! HTTP sender. Adapters never touch accounts, routing or the store.

mod anthropic;
mod azure;
mod bedrock;
mod error;
mod eventstream;
mod gemini;
mod mock;
mod openai;
mod pool;
pub mod presets;
mod registry;
mod scrub;
pub mod sse;
pub mod upstream;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use crate::openai::{ChatChunk, ChatRequest, ChatResponse, SamplingSet};

pub use error::{ProviderError, UpstreamError, UpstreamErrorKind};
pub use registry::{ProviderEntry, Registry, RegistryError};
pub use sse::SseEvent;

/// What an endpoint can honour; routing filters on it and adapters consult it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub tools: bool,
    pub tool_choice: bool,
    pub response_format: bool,
    pub reasoning: bool,
    pub vision: bool,
    /// The sampling parameters it accepts. Every one when the catalog names none of them (so
    /// configs written before the rule keep working), else exactly those named; either way
    /// without those its provider's preset refuses.
    pub sampling: SamplingSet,
    /// Whether the catalog named sampling parameters, so `sampling` is known rather than assumed.
    pub explicit_sampling: bool,
    /// Any other names the catalog lists.
    pub parameters: Vec<String>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            tools: false,
            tool_choice: false,
            response_format: false,
            reasoning: false,
            vision: false,
            sampling: SamplingSet::ALL,
            explicit_sampling: false,
            parameters: Vec::new(),
        }
    }
}

/// What `GET /v1/models` claims for an endpoint that names no sampling parameters: the ones
/// nearly every OpenAI-compatible API takes.
const ASSUMED_SAMPLING: [&str; 3] = ["temperature", "top_p", "stop"];

impl Capabilities {
    pub fn from_names(names: &[String]) -> Self {
        let mut capabilities = Capabilities::default();
        let mut sampling = SamplingSet::EMPTY;
        for name in names {
            match name.as_str() {
                "tools" => capabilities.tools = true,
                "tool_choice" => capabilities.tool_choice = true,
                "response_format" => capabilities.response_format = true,
                "reasoning" => capabilities.reasoning = true,
                "vision" => capabilities.vision = true,
                other => match SamplingSet::of(other) {
                    Some(parameter) => sampling = sampling.union(parameter),
                    None => capabilities.parameters.push(other.to_owned()),
                },
            }
        }
        if !sampling.is_empty() {
            capabilities.sampling = sampling;
            capabilities.explicit_sampling = true;
        }
        capabilities
    }

    /// Takes out the sampling parameters among a provider's refused fields.
    #[must_use]
    pub fn refusing(mut self, refused: &[&str]) -> Self {
        let refused = SamplingSet::from_names(refused.iter().copied());
        self.sampling = self.sampling.difference(refused);
        self
    }

    /// The names as the catalog and `supported_parameters` spell them. Sampling parameters are
    /// the explicit list, or for an implicit one the few nearly every API takes.
    pub fn names(&self) -> Vec<&str> {
        let flags = [
            (self.tools, "tools"),
            (self.tool_choice, "tool_choice"),
            (self.response_format, "response_format"),
            (self.reasoning, "reasoning"),
            (self.vision, "vision"),
        ];
        let set = flags
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name));
        let advertised = if self.explicit_sampling {
            self.sampling
        } else {
            self.sampling
                .intersection(SamplingSet::from_names(ASSUMED_SAMPLING))
        };
        let mut names: Vec<&str> = set.chain(advertised.names()).collect();
        names.extend(self.parameters.iter().map(String::as_str));
        names
    }
}

/// The part of a catalog endpoint an adapter needs to build its request.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The provider's own model name.
    pub upstream_model: &'a str,
    pub max_output: Option<u32>,
    pub capabilities: &'a Capabilities,
}

/// A request ready for [`upstream::Upstream::send`].
#[derive(Debug)]
pub enum UpstreamRequest {
    /// An HTTP `POST` to the provider.
    Http {
        uri: http::Uri,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
    /// An answer produced in-process, in the provider's own wire format (the `mock` provider):
    /// it goes through the same decoding as a network answer.
    Local { status: StatusCode, body: Bytes },
}

/// How an upstream frames the events of a streamed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events (`text/event-stream`): nearly every provider.
    Sse,
    /// AWS event-stream binary messages (Bedrock's streaming APIs).
    AwsEventStream,
}

/// An API key (or a whole credential such as `Bearer …`) as a header value, marked sensitive so
/// no debug output or log line can show it.
pub(super) fn secret_header(credential: &str) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::try_from(credential).map_err(|_| {
        ProviderError::Unsupported("the API key contains invalid characters".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// An upstream URL built from the configured `base_url`, parsed once when the provider is built.
pub(super) fn endpoint_uri(url: String) -> Result<http::Uri, ProviderError> {
    http::Uri::try_from(url)
        .map_err(|error| ProviderError::Unsupported(format!("invalid base_url: {error}")))
}

/// The headers of a JSON `POST`: the content type, then the provider's credential header if a key
/// is configured.
pub(super) fn json_headers(
    credential: Option<(HeaderName, &HeaderValue)>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::with_capacity(3);
    headers.push((
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    if let Some((name, value)) = credential {
        headers.push((name, value.clone()));
    }
    headers
}

/// Translates between the canonical OpenAI types and one upstream API. Does no I/O.
pub trait Provider: Send + Sync {
    /// How streamed bodies are split into the events the [`StreamDecoder`] reads.
    fn framing(&self) -> Framing {
        Framing::Sse
    }
    fn build_request(
        &self,
        request: &ChatRequest,
        target: Target<'_>,
    ) -> Result<UpstreamRequest, ProviderError>;
    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, ProviderError>;
    /// Fresh decoder state for one stream.
    fn stream_decoder(&self) -> Box<dyn StreamDecoder>;
    fn parse_error(&self, status: StatusCode, body: &[u8]) -> UpstreamError;
}

/// Turns one upstream stream's events into canonical chunks. Events arrive as [`SseEvent`]s
/// whatever the [`Framing`]: an event-stream message's type is the event name, its payload the data.
pub trait StreamDecoder: Send {
    /// Chunks produced by one event; `Ok(None)` for events that carry none (pings, comments) and
    /// `Err` for an error the upstream reported inside the stream.
    fn decode(&mut self, event: &SseEvent) -> Result<Option<ChatChunk>, UpstreamError>;
    /// Whether the upstream has signalled the end of the stream (`[DONE]`, `message_stop`, ...).
    fn finished(&self) -> bool;
    /// A further chunk the last event produced, taken before the next event is read. Most events
    /// make one chunk; an event that carries what OpenAI sends as two (a whole tool call and the
    /// finish reason) makes two, because clients close a tool call only on a later chunk.
    fn take_pending(&mut self) -> Option<ChatChunk> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capabilities(names: &[&str]) -> Capabilities {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        Capabilities::from_names(&names)
    }

    #[test]
    fn naming_no_sampling_parameter_accepts_them_all() {
        let implicit = capabilities(&["tools", "structured_outputs"]);
        assert!(!implicit.explicit_sampling);
        assert_eq!(implicit.sampling, SamplingSet::ALL);
        assert_eq!(
            implicit.names(),
            [
                "tools",
                "temperature",
                "top_p",
                "stop",
                "structured_outputs"
            ]
        );
    }

    #[test]
    fn naming_one_sampling_parameter_makes_the_list_explicit() {
        let explicit = capabilities(&["tools", "top_k", "temperature"]);
        assert!(explicit.explicit_sampling);
        assert_eq!(
            explicit.sampling,
            SamplingSet::from_names(["temperature", "top_k"])
        );
        assert_eq!(explicit.names(), ["tools", "temperature", "top_k"]);
    }

    #[test]
    fn a_presets_refusals_are_unsupported_either_way() {
        let refused = ["logprobs", "user", "max_completion_tokens"];
        let implicit = capabilities(&[]).refusing(&refused);
        assert!(
            !implicit
                .sampling
                .contains(SamplingSet::from_names(["logprobs"]))
        );
        assert!(
            implicit
                .sampling
                .contains(SamplingSet::from_names(["seed", "top_k"]))
        );
        let explicit = capabilities(&["seed", "logprobs"]).refusing(&refused);
        assert_eq!(explicit.sampling, SamplingSet::from_names(["seed"]));
    }
}
