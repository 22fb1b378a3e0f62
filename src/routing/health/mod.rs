//! The health tracker: every endpoint's circuit breaker and rolling stats, fed by the outcome
//! of each attempt and read by every plan. Shared by all serving threads through one `Arc`;
//! each endpoint has its own lock, so requests to different endpoints never wait on each other.

mod breaker;
mod clock;
mod stats;

use foldhash::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub use breaker::BreakerState;
use breaker::{Breaker, BreakerSettings};
use clock::{Clock, SystemClock};
use stats::Stats;
pub use stats::{Measurement, Percentiles, Recent, Uptime};

use super::catalog::{Catalog, Endpoint, Model};
use super::plan::PlannedAttempt;
use super::status::{EndpointHealth, EndpointStatus};
use crate::config::HealthConfig;
use crate::providers::{UpstreamError, UpstreamErrorKind};

#[derive(Debug, Default)]
struct Tracked {
    breaker: Breaker,
    stats: Stats,
}

/// One endpoint's standing for the endpoints API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointReport {
    pub breaker: BreakerState,
    pub recently_failed: bool,
    pub recent: Recent,
}

/// Endpoints are identified by model id and their index in the model's endpoint list: the
/// plan already holds both, and the same upstream offered under two models is judged per model,
/// as their prices and limits (and so their traffic) differ.
pub struct HealthTracker {
    endpoints: HashMap<Arc<str>, Box<[Mutex<Tracked>]>>,
    settings: BreakerSettings,
    clock: Box<dyn Clock>,
    /// Stats keep time as the duration since this instant.
    origin: Instant,
}

/// Whether an error is the endpoint's fault. The caller's own mistakes (400, 413, context
/// length) and the operator's (401/403 credentials, 404 unknown upstream model) say nothing
/// about whether the endpoint is up.
fn counts_against(error: &UpstreamError) -> bool {
    match error.kind {
        UpstreamErrorKind::Server
        | UpstreamErrorKind::RateLimited
        | UpstreamErrorKind::Timeout
        | UpstreamErrorKind::Connect
        | UpstreamErrorKind::Protocol => true,
        UpstreamErrorKind::BadRequest
        | UpstreamErrorKind::ContextLength
        | UpstreamErrorKind::Unauthorized
        | UpstreamErrorKind::NotFound
        | UpstreamErrorKind::PayloadTooLarge => false,
    }
}

impl HealthTracker {
    pub fn new(catalog: &Catalog, config: &HealthConfig) -> Self {
        Self::with_clock(catalog, config.into(), Box::new(SystemClock))
    }

    fn with_clock(catalog: &Catalog, settings: BreakerSettings, clock: Box<dyn Clock>) -> Self {
        let endpoints = catalog
            .models()
            .map(|model| {
                let tracked = model
                    .endpoints
                    .iter()
                    .map(|_| Mutex::new(Tracked::default()))
                    .collect();
                (model.id.clone(), tracked)
            })
            .collect();
        let origin = clock.now();
        Self {
            endpoints,
            settings,
            clock,
            origin,
        }
    }

    /// The endpoint's state, locked. A panic while holding it leaves plain numbers behind, never
    /// a broken invariant, so a poisoned lock is used as is.
    fn tracked(&self, model: &Model, index: usize) -> Option<MutexGuard<'_, Tracked>> {
        let lock = self.endpoints.get(&*model.id)?.get(index)?;
        Some(lock.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn now(&self) -> (Instant, std::time::Duration) {
        let now = self.clock.now();
        (now, now.saturating_duration_since(self.origin))
    }

    /// The endpoint answered. `measurement` is `None` when the caller went away before the
    /// end: still a success, but a partial answer's timings would skew the statistics.
    pub fn answered(&self, attempt: &PlannedAttempt, measurement: Option<Measurement>) {
        let (_, since) = self.now();
        if let Some(mut tracked) = self.tracked(&attempt.model, attempt.endpoint_index()) {
            tracked.breaker.succeeded();
            tracked.stats.attempted(since, false);
            if let Some(measurement) = measurement {
                tracked.stats.measured(since, measurement);
            }
        }
    }

    /// The endpoint failed; only failures that are its fault count.
    pub fn failed(&self, attempt: &PlannedAttempt, error: &UpstreamError) {
        if !counts_against(error) {
            return;
        }
        let (now, since) = self.now();
        if let Some(mut tracked) = self.tracked(&attempt.model, attempt.endpoint_index()) {
            tracked.stats.attempted(since, true);
            let failing_often = tracked.stats.failing_often(since);
            tracked
                .breaker
                .failed(now, error.retry_after, failing_often, &self.settings);
        }
    }

    /// Each of the model's endpoints' standing, in catalog order.
    pub fn report(&self, model: &Model) -> Vec<EndpointReport> {
        let (now, since) = self.now();
        (0..model.endpoints.len())
            .map(|index| {
                self.tracked(model, index)
                    .map_or_else(EndpointReport::unknown, |tracked| EndpointReport {
                        breaker: tracked.breaker.state(now),
                        recently_failed: tracked.breaker.recently_failed(now),
                        recent: tracked.stats.recent(since),
                    })
            })
            .collect()
    }
}

impl EndpointReport {
    /// An endpoint the tracker was not built with: nothing known against it.
    fn unknown() -> Self {
        Self {
            breaker: BreakerState::Closed,
            recently_failed: false,
            recent: Recent::default(),
        }
    }
}

impl EndpointHealth for HealthTracker {
    /// Planning asks once per usable endpoint, and only for requests it will send, so a
    /// half-open endpoint's one probe goes to the request that asked first.
    fn status(&self, model: &Model, endpoint: &Endpoint) -> EndpointStatus {
        let Some(index) = model
            .endpoints
            .iter()
            .position(|candidate| std::ptr::eq(candidate, endpoint))
        else {
            return EndpointStatus::default();
        };
        let (now, _) = self.now();
        let Some(mut tracked) = self.tracked(model, index) else {
            return EndpointStatus::default();
        };
        let admission = tracked.breaker.admit(now, &self.settings);
        EndpointStatus {
            healthy: admission.admitted,
            recently_failed: tracked.breaker.recently_failed(now),
            retry_in: admission.retry_in,
            latency: tracked.stats.ttft_p50(),
            throughput: tracked.stats.throughput_p50(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::breaker::tests::SETTINGS;
    use super::clock::ManualClock;
    use super::*;
    use crate::routing::plan::tests::catalog;

    fn tracker() -> (HealthTracker, Arc<ManualClock>, Arc<Model>) {
        let catalog = catalog();
        let clock = Arc::new(ManualClock::new());
        let tracker = HealthTracker::with_clock(&catalog, SETTINGS, Box::new(clock.clone()));
        let model = catalog.model("x/one").unwrap().clone();
        (tracker, clock, model)
    }

    fn server_error() -> UpstreamError {
        UpstreamError::new(UpstreamErrorKind::Server, "down")
    }

    #[test]
    fn counted_failures_open_only_their_own_endpoint() {
        let (tracker, clock, model) = tracker();
        let first = PlannedAttempt::new(model.clone(), 0);
        for _ in 0..3 {
            tracker.failed(&first, &server_error());
        }
        let status = tracker.status(&model, &model.endpoints[0]);
        assert!(!status.healthy);
        assert_eq!(status.retry_in, Some(Duration::from_secs(5)));
        assert!(tracker.status(&model, &model.endpoints[1]).healthy);
        clock.advance(Duration::from_secs(5));
        assert!(tracker.status(&model, &model.endpoints[0]).healthy, "probe");
        assert!(!tracker.status(&model, &model.endpoints[0]).healthy);
        tracker.answered(&first, None);
        assert!(tracker.status(&model, &model.endpoints[0]).healthy);
    }

    #[test]
    fn the_callers_mistakes_never_count_against_an_endpoint() {
        let (tracker, _, model) = tracker();
        let first = PlannedAttempt::new(model.clone(), 0);
        for kind in [
            UpstreamErrorKind::BadRequest,
            UpstreamErrorKind::ContextLength,
            UpstreamErrorKind::Unauthorized,
            UpstreamErrorKind::PayloadTooLarge,
        ] {
            for _ in 0..5 {
                tracker.failed(&first, &UpstreamError::new(kind, "no"));
            }
        }
        let status = tracker.status(&model, &model.endpoints[0]);
        assert!(status.healthy && !status.recently_failed);
        assert_eq!(tracker.report(&model)[0].recent.uptime, Uptime::default());
    }

    #[test]
    fn measurements_feed_the_status_and_the_report() {
        let (tracker, _, model) = tracker();
        let second = PlannedAttempt::new(model.clone(), 1);
        tracker.answered(
            &second,
            Some(Measurement {
                ttft: Duration::from_millis(200),
                latency: Duration::from_millis(1200),
                output_tokens: 100,
            }),
        );
        let status = tracker.status(&model, &model.endpoints[1]);
        assert_eq!(status.latency, Some(Duration::from_millis(200)));
        assert_eq!(status.throughput, Some(100.0));
        let report = tracker.report(&model);
        assert_eq!(report[1].recent.uptime.last_5m, Some(100.0));
        assert_eq!(report[1].recent.latency.unwrap().p50, 1.2);
        assert_eq!(report[0].recent.ttft, None);
    }
}
