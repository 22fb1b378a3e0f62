//! One try of one endpoint: translate, send, and read up to the answer (or, for streams, up to
//! the first chunk, which is the last moment another endpoint can still take over).

use tokio::time::Instant;

use crate::openai::{ChatChunk, ChatRequest, ChatResponse};
use crate::providers::upstream::UpstreamResponse;
use crate::providers::{
    ProviderEntry, Registry, StreamDecoder, Target, UpstreamError, UpstreamErrorKind,
};
use crate::routing::PlannedAttempt;
use crate::usage::record::{Attempt, Served};

/// A stream whose first chunk has arrived.
pub(super) struct Opened {
    pub response: UpstreamResponse,
    pub decoder: Box<dyn StreamDecoder>,
    pub first: ChatChunk,
    pub served: Served,
}

fn provider<'a>(
    registry: &'a Registry,
    planned: &PlannedAttempt,
) -> Result<&'a ProviderEntry, UpstreamError> {
    let id = &planned.endpoint().provider;
    registry.get(id).map(|entry| &**entry).ok_or_else(|| {
        UpstreamError::new(
            UpstreamErrorKind::Protocol,
            format!("provider {id:?} is not configured"),
        )
    })
}

async fn send(
    provider: &ProviderEntry,
    planned: &PlannedAttempt,
    request: &ChatRequest,
) -> Result<UpstreamResponse, UpstreamError> {
    let endpoint = planned.endpoint();
    let target = Target {
        upstream_model: &endpoint.upstream_model,
        max_output: endpoint.max_output,
        capabilities: &endpoint.capabilities,
    };
    // Sampling parameters the endpoint does not support are dropped, not sent to fail; the
    // copy is made only when there is something to drop.
    let unsupported = request
        .sampling_parameters()
        .difference(endpoint.capabilities.sampling);
    let trimmed;
    let request = if unsupported.is_empty() {
        request
    } else {
        trimmed = request.without_sampling(unsupported);
        &trimmed
    };
    let upstream_request = provider.adapter.build_request(request, target)?;
    provider
        .upstream
        .send(upstream_request, &*provider.adapter)
        .await
}

fn served(planned: &PlannedAttempt) -> Served {
    let endpoint = planned.endpoint();
    Served {
        model: planned.model.id.clone(),
        provider: endpoint.provider.clone(),
        upstream_model: endpoint.upstream_model.clone(),
        pricing: endpoint.pricing,
    }
}

pub(super) async fn complete(
    registry: &Registry,
    planned: &PlannedAttempt,
    request: &ChatRequest,
) -> Result<(ChatResponse, Served), UpstreamError> {
    let provider = provider(registry, planned)?;
    let body = send(provider, planned, request).await?.bytes().await?;
    let response = provider.adapter.parse_response(&body)?;
    Ok((response, served(planned)))
}

pub(super) async fn open_stream(
    registry: &Registry,
    planned: &PlannedAttempt,
    request: &ChatRequest,
) -> Result<Opened, UpstreamError> {
    let provider = provider(registry, planned)?;
    let mut response = send(provider, planned, request).await?;
    let mut decoder = provider.adapter.stream_decoder();
    while let Some(event) = response.next_event().await {
        if let Some(first) = decoder.decode(&event?)? {
            return Ok(Opened {
                response,
                decoder,
                first,
                served: served(planned),
            });
        }
        if decoder.finished() {
            break;
        }
    }
    Err(UpstreamError::new(
        UpstreamErrorKind::Protocol,
        "the upstream ended the stream before sending anything",
    ))
}

pub(super) fn record(
    planned: &PlannedAttempt,
    started: Instant,
    error: Option<&UpstreamError>,
) -> Attempt {
    let endpoint = planned.endpoint();
    Attempt {
        provider: endpoint.provider.clone(),
        model: planned.model.id.clone(),
        status: error.map_or(Some(200), |error| error.status),
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        error: error.map(|error| error.message.clone()),
    }
}
