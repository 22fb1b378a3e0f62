//! Where the health tracker reads the time, so tests can move it by hand.

use std::time::Instant;

pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still until a test advances it.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock(std::sync::Mutex<Instant>);

#[cfg(test)]
impl ManualClock {
    pub fn new() -> Self {
        Self(std::sync::Mutex::new(Instant::now()))
    }

    pub fn advance(&self, by: std::time::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

#[cfg(test)]
impl Clock for std::sync::Arc<ManualClock> {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}
