//! What selection knows of an endpoint's health and speed, and the seam a health tracker plugs
//! into. Selection only reads these values; it never measures or stores them.

use std::time::Duration;

use super::catalog::{Endpoint, Model};

/// One endpoint's current standing, as the health tracker sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointStatus {
    /// `false` drops the endpoint from every plan (an open circuit breaker, say).
    pub healthy: bool,
    /// Failed lately but still worth a try: kept, but tried after every other endpoint.
    pub recently_failed: bool,
    /// When an unhealthy endpoint is expected back; becomes `Retry-After` when no endpoint is left.
    pub retry_in: Option<Duration>,
    /// Time to first token; `None` until measured.
    pub latency: Option<Duration>,
    /// Output tokens per second; `None` until measured.
    pub throughput: Option<f64>,
}

impl Default for EndpointStatus {
    fn default() -> Self {
        Self {
            healthy: true,
            recently_failed: false,
            retry_in: None,
            latency: None,
            throughput: None,
        }
    }
}

/// Where plans read endpoint status from. Called once per candidate endpoint per request, so an
/// implementation must answer from memory without a lock shared by all requests.
pub trait EndpointHealth: Send + Sync {
    fn status(&self, model: &Model, endpoint: &Endpoint) -> EndpointStatus;
}

/// Statuses by provider id, for tests; unlisted providers get the default.
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct StubHealth(pub Vec<(&'static str, EndpointStatus)>);

#[cfg(test)]
impl EndpointHealth for StubHealth {
    fn status(&self, _model: &Model, endpoint: &Endpoint) -> EndpointStatus {
        self.0
            .iter()
            .find(|(provider, _)| *provider == &*endpoint.provider)
            .map_or_else(EndpointStatus::default, |(_, status)| *status)
    }
}
