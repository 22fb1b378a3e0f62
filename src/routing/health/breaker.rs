//! One endpoint's circuit breaker: closed, open for a cool-down, then half-open with a single
//! probe. Pure state machine over instants it is given; it never reads a clock itself.

use std::time::{Duration, Instant};

use crate::config::HealthConfig;

/// A counted failure within this long marks the endpoint as recently failed, so plans try it
/// after the others.
const RECENT_FAILURE: Duration = Duration::from_secs(30);

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerSettings {
    pub failure_threshold: u32,
    pub cool_down: Duration,
    pub max_cool_down: Duration,
}

impl From<&HealthConfig> for BreakerSettings {
    fn from(config: &HealthConfig) -> Self {
        Self {
            failure_threshold: config.failure_threshold,
            cool_down: config.cool_down.0,
            max_cool_down: config.max_cool_down.0,
        }
    }
}

impl BreakerSettings {
    /// The cool-down after `trips` trips in a row: doubled each time, capped.
    fn cool_down(&self, trips: u32) -> Duration {
        let doublings = trips.saturating_sub(1).min(16);
        self.cool_down
            .saturating_mul(1 << doublings)
            .min(self.max_cool_down)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// Cool-down over; `probe_until` is when the probe in flight, if any, stops excluding other
    /// requests (a probe whose request was dropped or never sent must not hold it forever).
    HalfOpen {
        probe_until: Option<Instant>,
    },
}

/// What a breaker shows the outside: the endpoints API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Whether a request may use the endpoint now, and if not, when it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    pub admitted: bool,
    pub retry_in: Option<Duration>,
}

#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    state: State,
    /// Counted failures since the last success.
    consecutive: u32,
    /// Trips since the last success; each one doubles the cool-down.
    trips: u32,
    last_failure: Option<Instant>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: State::Closed,
            consecutive: 0,
            trips: 0,
            last_failure: None,
        }
    }
}

impl Breaker {
    /// Asks to use the endpoint at `now`. In half-open this claims the one probe, so the
    /// caller must only ask for a request it will send.
    pub fn admit(&mut self, now: Instant, settings: &BreakerSettings) -> Admission {
        if let State::Open { until } = self.state {
            if now < until {
                return Admission {
                    admitted: false,
                    retry_in: Some(until - now),
                };
            }
            self.state = State::HalfOpen { probe_until: None };
        }
        match self.state {
            State::HalfOpen {
                probe_until: Some(until),
            } if now < until => Admission {
                admitted: false,
                retry_in: Some(until - now),
            },
            State::HalfOpen { .. } => {
                let lease = settings.cool_down(self.trips);
                self.state = State::HalfOpen {
                    probe_until: Some(now + lease),
                };
                Admission {
                    admitted: true,
                    retry_in: None,
                }
            }
            State::Closed | State::Open { .. } => Admission {
                admitted: true,
                retry_in: None,
            },
        }
    }

    /// The endpoint answered: whatever state it was in, it is closed and forgiven.
    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    /// A counted failure. `retry_after` is the upstream's own estimate, which opens the breaker
    /// at once; `failing_often` says the endpoint's recent failure rate is past the limit.
    pub fn failed(
        &mut self,
        now: Instant,
        retry_after: Option<Duration>,
        failing_often: bool,
        settings: &BreakerSettings,
    ) {
        self.last_failure = Some(now);
        self.consecutive = self.consecutive.saturating_add(1);
        let trip = match self.state {
            State::HalfOpen { .. } => true,
            State::Closed => {
                self.consecutive >= settings.failure_threshold
                    || retry_after.is_some()
                    || failing_often
            }
            // A request sent before the breaker opened; it only matters if it asks for longer.
            State::Open { until } => retry_after.is_some_and(|wait| now + wait > until),
        };
        if trip {
            if !matches!(self.state, State::Open { .. }) {
                self.trips = self.trips.saturating_add(1);
            }
            let asked = retry_after.map_or(Duration::ZERO, |wait| wait.min(settings.max_cool_down));
            let hold = settings.cool_down(self.trips).max(asked);
            self.state = State::Open { until: now + hold };
        }
    }

    pub fn recently_failed(&self, now: Instant) -> bool {
        self.last_failure
            .is_some_and(|at| now.saturating_duration_since(at) < RECENT_FAILURE)
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The settings every health test runs with.
    pub(in crate::routing::health) const SETTINGS: BreakerSettings = BreakerSettings {
        failure_threshold: 3,
        cool_down: Duration::from_secs(5),
        max_cool_down: Duration::from_secs(60),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn fail(breaker: &mut Breaker, now: Instant, times: u32) {
        for _ in 0..times {
            breaker.failed(now, None, false, &SETTINGS);
        }
    }

    #[test]
    fn it_opens_after_the_threshold_of_consecutive_failures_and_not_before() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        fail(&mut breaker, t0, 2);
        assert!(breaker.admit(t0, &SETTINGS).admitted);
        assert!(breaker.recently_failed(t0));
        fail(&mut breaker, t0, 1);
        let admission = breaker.admit(t0 + secs(1), &SETTINGS);
        assert!(!admission.admitted);
        assert_eq!(admission.retry_in, Some(secs(4)));
        assert_eq!(breaker.state(t0), BreakerState::Open);
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        fail(&mut breaker, t0, 2);
        breaker.succeeded();
        fail(&mut breaker, t0, 2);
        assert!(breaker.admit(t0, &SETTINGS).admitted);
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_through_and_its_success_closes_the_breaker() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        fail(&mut breaker, t0, 3);
        let later = t0 + secs(5);
        assert!(breaker.admit(later, &SETTINGS).admitted, "the probe");
        let second = breaker.admit(later, &SETTINGS);
        assert!(!second.admitted, "only one probe at a time");
        assert_eq!(second.retry_in, Some(secs(5)));
        breaker.succeeded();
        assert_eq!(breaker.state(later), BreakerState::Closed);
        assert!(breaker.admit(later, &SETTINGS).admitted);
        assert!(!breaker.recently_failed(later));
    }

    #[test]
    fn a_failed_probe_reopens_with_a_doubled_cool_down() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        fail(&mut breaker, t0, 3);
        let probe = t0 + secs(5);
        assert!(breaker.admit(probe, &SETTINGS).admitted);
        fail(&mut breaker, probe, 1);
        let admission = breaker.admit(probe, &SETTINGS);
        assert_eq!(admission.retry_in, Some(secs(10)));
        assert!(breaker.admit(probe + secs(10), &SETTINGS).admitted);
    }

    #[test]
    fn the_cool_down_doubles_up_to_its_cap_and_resets_after_a_success() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        fail(&mut breaker, t0, 3);
        let mut now = t0;
        for _ in 0..10 {
            now += secs(120);
            assert!(breaker.admit(now, &SETTINGS).admitted);
            fail(&mut breaker, now, 1);
        }
        assert_eq!(breaker.admit(now, &SETTINGS).retry_in, Some(secs(60)));
        now += secs(60);
        assert!(breaker.admit(now, &SETTINGS).admitted);
        breaker.succeeded();
        fail(&mut breaker, now, 3);
        assert_eq!(breaker.admit(now, &SETTINGS).retry_in, Some(secs(5)));
    }

    #[test]
    fn a_retry_after_opens_at_once_for_as_long_as_asked_within_the_cap() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        breaker.failed(t0, Some(secs(20)), false, &SETTINGS);
        assert_eq!(breaker.admit(t0, &SETTINGS).retry_in, Some(secs(20)));

        let mut breaker = Breaker::default();
        breaker.failed(t0, Some(secs(1)), false, &SETTINGS);
        assert_eq!(
            breaker.admit(t0, &SETTINGS).retry_in,
            Some(secs(5)),
            "never shorter than the cool-down"
        );

        let mut breaker = Breaker::default();
        breaker.failed(t0, Some(secs(86_400)), false, &SETTINGS);
        assert_eq!(breaker.admit(t0, &SETTINGS).retry_in, Some(secs(60)));
    }

    #[test]
    fn a_high_failure_rate_opens_it_before_the_threshold() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        breaker.failed(t0, None, true, &SETTINGS);
        assert!(!breaker.admit(t0, &SETTINGS).admitted);
    }

    #[test]
    fn a_probe_that_never_reports_back_frees_the_endpoint_after_its_lease() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        fail(&mut breaker, t0, 3);
        assert!(breaker.admit(t0 + secs(5), &SETTINGS).admitted);
        assert!(!breaker.admit(t0 + secs(9), &SETTINGS).admitted);
        assert!(breaker.admit(t0 + secs(10), &SETTINGS).admitted);
    }

    #[test]
    fn failures_are_forgotten_as_recent_after_thirty_seconds() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        fail(&mut breaker, t0, 1);
        assert!(breaker.recently_failed(t0 + secs(29)));
        assert!(!breaker.recently_failed(t0 + secs(30)));
    }
}
