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
mod registry;
pub mod sse;
pub mod upstream;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use crate::openai::{ChatChunk, ChatRequest, ChatResponse};

pub use error::{ProviderError, UpstreamError, UpstreamErrorKind};
pub use registry::{ProviderEntry, Registry, RegistryError};
pub use sse::SseEvent;

/// What an endpoint can honour; routing filters on it and adapters consult it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub tools: bool,
    pub tool_choice: bool,
    pub response_format: bool,
    pub reasoning: bool,
    pub vision: bool,
    /// Any other parameter names the catalog lists (`seed`, `top_k`, ...).
    pub parameters: Vec<String>,
}

impl Capabilities {
    pub fn from_names(names: &[String]) -> Self {
        let mut capabilities = Capabilities::default();
        for name in names {
            match name.as_str() {
                "tools" => capabilities.tools = true,
                "tool_choice" => capabilities.tool_choice = true,
                "response_format" => capabilities.response_format = true,
                "reasoning" => capabilities.reasoning = true,
                "vision" => capabilities.vision = true,
                other => capabilities.parameters.push(other.to_owned()),
            }
        }
        capabilities
    }

    /// The names as the catalog and `supported_parameters` spell them.
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
        set.chain(self.parameters.iter().map(String::as_str))
            .collect()
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
}
