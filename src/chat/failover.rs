//! Which of a plan's endpoints a request still tries after one has failed: only after errors
//! another endpoint could absorb, at most [`MAX_ATTEMPTS`] of them, and none started after
//! [`FAILOVER_DEADLINE`]. A prompt too long for one model skips that model's other endpoints and
//! moves on only to models with a longer context.

use std::time::Duration;

use tokio::time::Instant;

use crate::providers::{UpstreamError, UpstreamErrorKind};
use crate::routing::PlannedAttempt;

/// Upstream attempts one request may make, whatever the plan holds.
pub const MAX_ATTEMPTS: usize = 5;
/// No new attempt starts this long after the request arrived; the one running keeps its own
/// timeouts, so a long answer is never cut.
pub const FAILOVER_DEADLINE: Duration = Duration::from_secs(120);

pub struct Failover {
    started: Instant,
    attempts: usize,
    /// Set by a context-length error: later attempts need a model with more context than this
    /// (`None` inside: the failed model's context is unknown, so only known-larger ones qualify).
    needs_context_over: Option<Option<u32>>,
    failed_model: Option<std::sync::Arc<str>>,
}

/// What to do after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Try the next endpoint the plan admits.
    Continue,
    /// Answer with this error.
    Stop,
}

impl Failover {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            attempts: 0,
            needs_context_over: None,
            failed_model: None,
        }
    }

    /// Whether `planned` is tried now; counts it when it is.
    pub fn admits(&mut self, planned: &PlannedAttempt) -> bool {
        if self.attempts >= MAX_ATTEMPTS || self.started.elapsed() >= FAILOVER_DEADLINE {
            return false;
        }
        if let Some(needed) = self.needs_context_over {
            let larger = match (planned.model.context_length, needed) {
                (Some(context), Some(failed)) => context > failed,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let same_model = self.failed_model.as_deref() == Some(&*planned.model.id);
            if same_model || !larger {
                return false;
            }
        }
        self.attempts += 1;
        true
    }

    /// After `planned` failed with `error`: go on, or answer with the error.
    pub fn after(&mut self, planned: &PlannedAttempt, error: &UpstreamError) -> Next {
        if error.kind == UpstreamErrorKind::ContextLength {
            self.needs_context_over = Some(planned.model.context_length);
            self.failed_model = Some(planned.model.id.clone());
            return Next::Continue;
        }
        if error.is_retryable() {
            Next::Continue
        } else {
            Next::Stop
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::routing::Model;

    fn attempt(id: &str, context_length: Option<u32>) -> PlannedAttempt {
        let model = Model {
            id: Arc::from(id),
            name: id.to_owned(),
            description: String::new(),
            context_length,
            endpoints: Vec::new(),
        };
        PlannedAttempt::new(Arc::new(model), 0)
    }

    fn error(kind: UpstreamErrorKind) -> UpstreamError {
        UpstreamError::new(kind, "failed")
    }

    #[test]
    fn attempts_are_bounded() {
        let mut failover = Failover::new(Instant::now());
        let planned = attempt("a/m", None);
        let admitted = (0..MAX_ATTEMPTS + 3)
            .filter(|_| failover.admits(&planned))
            .count();
        assert_eq!(admitted, MAX_ATTEMPTS);
    }

    #[test]
    fn no_attempt_starts_after_the_deadline() {
        let long_ago = Instant::now().checked_sub(FAILOVER_DEADLINE).unwrap();
        let mut failover = Failover::new(long_ago);
        assert!(!failover.admits(&attempt("a/m", None)));
    }

    #[test]
    fn only_errors_another_endpoint_could_absorb_go_on() {
        let mut failover = Failover::new(Instant::now());
        let planned = attempt("a/m", None);
        assert_eq!(
            failover.after(&planned, &error(UpstreamErrorKind::Server)),
            Next::Continue
        );
        assert_eq!(
            failover.after(&planned, &error(UpstreamErrorKind::RateLimited)),
            Next::Continue
        );
        assert_eq!(
            failover.after(&planned, &error(UpstreamErrorKind::BadRequest)),
            Next::Stop
        );
    }

    #[test]
    fn a_prompt_too_long_moves_on_only_to_models_with_more_context() {
        let mut failover = Failover::new(Instant::now());
        let small = attempt("a/small", Some(8_000));
        assert!(failover.admits(&small));
        let next = failover.after(&small, &error(UpstreamErrorKind::ContextLength));
        assert_eq!(next, Next::Continue);
        assert!(!failover.admits(&small), "the same model's other endpoints");
        assert!(!failover.admits(&attempt("b/same", Some(8_000))));
        assert!(!failover.admits(&attempt("b/unknown", None)));
        assert!(failover.admits(&attempt("c/large", Some(200_000))));
    }
}
