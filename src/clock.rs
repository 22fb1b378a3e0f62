//! [`WallClock`]: where the gateway reads the calendar time that decides outcomes (limit
//! periods, rate-limit windows, key expiry, the day a request is rolled up under). Production
//! reads the system clock; tests pin it, so no test depends on the day or the hour it runs.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

#[derive(Clone, Default)]
pub struct WallClock(Source);

#[derive(Clone, Default)]
enum Source {
    #[default]
    System,
    /// Stands where it was last set.
    Pinned(Arc<Mutex<DateTime<Utc>>>),
    /// Runs at the system's pace from a chosen instant.
    Shifted { from: DateTime<Utc>, at: Instant },
}

impl WallClock {
    pub fn system() -> WallClock {
        WallClock(Source::System)
    }

    /// A clock that stands still at `now` until [`WallClock::set`] moves it.
    pub fn pinned(now: DateTime<Utc>) -> WallClock {
        WallClock(Source::Pinned(Arc::new(Mutex::new(now))))
    }

    /// A clock that reads `start` now and runs on from there.
    pub fn starting_at(start: DateTime<Utc>) -> WallClock {
        WallClock(Source::Shifted {
            from: start,
            at: Instant::now(),
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Source::System => Utc::now(),
            Source::Pinned(now) => *now
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            Source::Shifted { from, at } => {
                let elapsed = chrono::Duration::from_std(at.elapsed()).unwrap_or_default();
                *from + elapsed
            }
        }
    }

    /// Moves a pinned clock, and every clone of it, to `now`.
    ///
    /// # Panics
    /// When the clock is not pinned: only a test moves time by hand.
    pub fn set(&self, now: DateTime<Utc>) {
        let Source::Pinned(pinned) = &self.0 else {
            panic!("only a pinned clock can be set");
        };
        *pinned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::System => f.write_str("WallClock(system)"),
            Source::Pinned(_) | Source::Shifted { .. } => write!(f, "WallClock({})", self.now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn a_pinned_clock_stands_still_until_set_and_clones_share_it() {
        let clock = WallClock::pinned(at("2026-11-30T23:59:59Z"));
        let clone = clock.clone();
        assert_eq!(clone.now(), at("2026-11-30T23:59:59Z"));
        clock.set(at("2026-12-01T00:00:00Z"));
        assert_eq!(clone.now(), at("2026-12-01T00:00:00Z"));
    }

    #[test]
    fn a_shifted_clock_starts_at_its_instant_and_never_runs_backwards() {
        let start = at("2028-02-29T12:00:00Z");
        let clock = WallClock::starting_at(start);
        let first = clock.now();
        let second = clock.now();
        assert!(first >= start && second >= first);
        assert!(second - start < chrono::Duration::hours(1));
    }
}
