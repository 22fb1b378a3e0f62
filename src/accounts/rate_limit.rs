//! Request rate limits per key: which limits a request is held to, counting it in the shared
//! store, and why a refused one was refused. No HTTP types here, and no SQL.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::AuthedKey;
use crate::clock::WallClock;
use crate::config::LimitsConfig;
use crate::store::{RateCheck, RateCounters, RateCounts, RateOutcome, RateScope, StoreError};

const MINUTE: i64 = 60;
/// Unix time has no leap seconds, so every UTC day is exactly this long and starts at a multiple.
const DAY: i64 = 86_400;

/// One of the four limits a request can be held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    KeyPerMinute,
    KeyPerDay,
    FreePerMinute,
    FreePerDay,
}

impl RateLimit {
    /// The `[limits]` key that sets it, for error metadata and logs.
    pub fn config_key(self) -> &'static str {
        match self {
            RateLimit::KeyPerMinute => "requests_per_minute",
            RateLimit::KeyPerDay => "requests_per_day",
            RateLimit::FreePerMinute => "free_requests_per_minute",
            RateLimit::FreePerDay => "free_requests_per_day",
        }
    }

    fn of(scope: RateScope, window: Window) -> RateLimit {
        match (scope, window) {
            (RateScope::Key, Window::Minute) => RateLimit::KeyPerMinute,
            (RateScope::Key, Window::Day) => RateLimit::KeyPerDay,
            (RateScope::Free, Window::Minute) => RateLimit::FreePerMinute,
            (RateScope::Free, Window::Day) => RateLimit::FreePerDay,
        }
    }

    fn window(self) -> Window {
        match self {
            RateLimit::KeyPerMinute | RateLimit::FreePerMinute => Window::Minute,
            RateLimit::KeyPerDay | RateLimit::FreePerDay => Window::Day,
        }
    }

    fn subject(self) -> &'static str {
        match self {
            RateLimit::KeyPerMinute | RateLimit::KeyPerDay => "this key",
            RateLimit::FreePerMinute | RateLimit::FreePerDay => ":free models",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    Minute,
    Day,
}

impl Window {
    fn seconds(self) -> i64 {
        match self {
            Window::Minute => MINUTE,
            Window::Day => DAY,
        }
    }

    /// When the window that began at `start` ends.
    fn end(self, start: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(start + self.seconds(), 0).unwrap_or_default()
    }

    /// The Unix second the window holding `now` began: fixed UTC minutes and days.
    fn start(self, now: DateTime<Utc>) -> i64 {
        let seconds = now.timestamp();
        seconds - seconds.rem_euclid(self.seconds())
    }
}

/// Where one limit stands: what the `X-RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    pub limit: u32,
    pub remaining: u32,
    /// When the window ends and the count starts over.
    pub reset: DateTime<Utc>,
}

impl RateWindow {
    fn new(limit: u32, count: i64, window: Window, start: i64) -> RateWindow {
        let used = u32::try_from(count.max(0)).unwrap_or(u32::MAX);
        RateWindow {
            limit,
            remaining: limit.saturating_sub(used),
            reset: window.end(start),
        }
    }
}

/// An admitted request: the limit closest to refusing, if any limit applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateAllowance {
    pub tightest: Option<RateWindow>,
}

impl RateAllowance {
    fn include(&mut self, window: RateWindow) {
        let tighter = self
            .tightest
            .is_none_or(|known| (window.remaining, window.reset) < (known.remaining, known.reset));
        if tighter {
            self.tightest = Some(window);
        }
    }
}

/// A request refused by a rate limit; it was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct RateLimited {
    pub limit: RateLimit,
    /// Its `remaining` is 0.
    pub window: RateWindow,
    /// Until `window.reset` in whole seconds, rounded up so a client that waits exactly this
    /// long is admitted, and at least one so it never retries in a tight loop: `Retry-After`.
    pub retry_after: Duration,
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.limit.window() {
            Window::Minute => "minute",
            Window::Day => "day",
        };
        write!(
            f,
            "rate limit exceeded: {} requests per {per} for {}; retry after {} s",
            self.window.limit,
            self.limit.subject(),
            self.retry_after.as_secs()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error(transparent)]
    Limited(#[from] RateLimited),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counts requests against the configured and per-key limits in the shared database (or Redis),
/// so every replica enforces one count. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    limits: LimitsConfig,
    counters: RateCounters,
    clock: WallClock,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limits", &self.inner.limits)
            .finish()
    }
}

/// The limits of one scope, per minute and per day; `None` is unlimited.
#[derive(Debug, Clone, Copy)]
struct Limits {
    scope: RateScope,
    per_minute: Option<u32>,
    per_day: Option<u32>,
}

impl RateLimiter {
    /// A limiter that judges windows by `clock`: tests pin it to cross window boundaries
    /// without sleeping.
    pub fn new(limits: LimitsConfig, counters: RateCounters, clock: WallClock) -> Self {
        let inner = Inner {
            limits,
            counters,
            clock,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Counts one request of `key` (for a `:free` model when `free`), or refuses it. A request
    /// held to no limit returns at once, without a round trip.
    pub async fn admit(
        &self,
        key: &AuthedKey,
        free: bool,
    ) -> Result<RateAllowance, RateLimitError> {
        let configured = &self.inner.limits;
        let own = Limits {
            scope: RateScope::Key,
            per_minute: key.requests_per_minute.or(configured.requests_per_minute),
            per_day: key.requests_per_day.or(configured.requests_per_day),
        };
        let limited = own.per_minute.is_some() || own.per_day.is_some();
        if !limited && !free {
            return Ok(RateAllowance::default());
        }
        let now = self.inner.clock.now();
        let mut allowance = RateAllowance::default();
        // The free scope first: it is the tighter one for free requests, and a refusal there
        // then leaves the key's own counter untouched.
        let free_counted = if free {
            let limits = Limits {
                scope: RateScope::Free,
                per_minute: Some(configured.free_requests_per_minute),
                per_day: Some(configured.free_requests_per_day),
            };
            Some(self.count(key, limits, now, &mut allowance).await?)
        } else {
            None
        };
        if limited {
            let refused = match self.count(key, own, now, &mut allowance).await {
                Err(RateLimitError::Limited(refused)) => refused,
                other => return other.map(|_| allowance),
            };
            // A refused request must not use up the free allowance either.
            if let Some(counted) = free_counted {
                self.inner
                    .counters
                    .uncount(&key.hash, RateScope::Free, &counted)
                    .await?;
            }
            return Err(refused.into());
        }
        Ok(allowance)
    }

    async fn count(
        &self,
        key: &AuthedKey,
        limits: Limits,
        now: DateTime<Utc>,
        allowance: &mut RateAllowance,
    ) -> Result<RateCounts, RateLimitError> {
        let check = RateCheck {
            minute_start: Window::Minute.start(now),
            day_start: Window::Day.start(now),
            per_minute: limits.per_minute,
            per_day: limits.per_day,
        };
        // The upsert would admit the first request of a window whatever its limit.
        // The day first, for the same reason as in `explain`.
        if let Some(window) = [
            (Window::Day, limits.per_day),
            (Window::Minute, limits.per_minute),
        ]
        .into_iter()
        .find_map(|(window, limit)| (limit == Some(0)).then_some(window))
        {
            let start = window.start(now);
            return Err(refusal(RateLimit::of(limits.scope, window), 0, start, now).into());
        }
        let counts = match self
            .inner
            .counters
            .count(&key.hash, limits.scope, &check)
            .await?
        {
            RateOutcome::Admitted(counts) => counts,
            RateOutcome::Refused(stored) => {
                return Err(explain(limits, &check, &stored, now).into());
            }
        };
        if let Some(limit) = limits.per_minute {
            let window = RateWindow::new(
                limit,
                counts.minute_count,
                Window::Minute,
                counts.minute_start,
            );
            allowance.include(window);
        }
        if let Some(limit) = limits.per_day {
            let window = RateWindow::new(limit, counts.day_count, Window::Day, counts.day_start);
            allowance.include(window);
        }
        Ok(counts)
    }
}

/// Which window of a refused request was full, from the counter as stored: the day when it is
/// full (waiting for the next minute would not help), else the minute. If the minute rolled over
/// between the refusal and this read, that is the minute too, and a retry at once will succeed.
fn explain(
    limits: Limits,
    check: &RateCheck,
    stored: &RateCounts,
    now: DateTime<Utc>,
) -> RateLimited {
    let day_full = limits.per_day.is_some_and(|limit| {
        stored.day_start >= check.day_start && stored.day_count >= i64::from(limit)
    });
    let (window, limit, start) = match (limits.per_minute, limits.per_day) {
        (_, Some(per_day)) if day_full => (Window::Day, per_day, stored.day_start),
        (Some(per_minute), _) => (Window::Minute, per_minute, stored.minute_start),
        (None, per_day) => (Window::Day, per_day.unwrap_or(0), stored.day_start),
    };
    refusal(RateLimit::of(limits.scope, window), limit, start, now)
}

fn refusal(limit: RateLimit, allowed: u32, start: i64, now: DateTime<Utc>) -> RateLimited {
    let window = RateWindow {
        limit: allowed,
        remaining: 0,
        reset: limit.window().end(start),
    };
    let wait = (window.reset - now).to_std().unwrap_or(Duration::ZERO);
    let whole_seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    RateLimited {
        limit,
        window,
        retry_after: Duration::from_secs(whole_seconds.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::LimitReset;
    use crate::accounts::period::period_start;
    use crate::store::Store;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn key(per_minute: Option<u32>, per_day: Option<u32>) -> AuthedKey {
        AuthedKey {
            hash: "0123abcd".into(),
            name: "test".into(),
            limit: None,
            limit_reset: None,
            requests_per_minute: per_minute,
            requests_per_day: per_day,
        }
    }

    /// A limiter over a fresh in-memory database, and the hand-moved clock it reads.
    async fn limiter(limits: LimitsConfig) -> (RateLimiter, WallClock) {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let clock = WallClock::pinned(at("2026-11-23T12:00:30Z"));
        let counters = RateCounters::Database(store);
        let limiter = RateLimiter::new(limits, counters, clock.clone());
        (limiter, clock)
    }

    async fn refused(limiter: &RateLimiter, key: &AuthedKey, free: bool) -> RateLimited {
        match limiter.admit(key, free).await {
            Err(RateLimitError::Limited(refused)) => refused,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn windows_are_fixed_utc_minutes_and_days() {
        let now = at("2026-11-23T23:59:59.900+00:00");
        assert_eq!(
            Window::Minute.start(now),
            at("2026-11-23T23:59:00Z").timestamp()
        );
        assert_eq!(
            Window::Day.start(now),
            at("2026-11-23T00:00:00Z").timestamp()
        );
        let local = at("2026-11-24T01:30:00+05:00");
        assert_eq!(
            Window::Day.start(local),
            at("2026-11-23T00:00:00Z").timestamp()
        );
        let before_epoch = at("1969-12-31T23:59:30Z");
        assert_eq!(Window::Minute.start(before_epoch), -60);
    }

    /// One second either side of every UTC midnight of three years: each window holds its
    /// instant, ends where the next begins, and the day is the daily limit period.
    #[test]
    fn windows_hold_every_instant_around_three_years_of_midnights() {
        let mut midnight = at("2026-01-01T00:00:00Z");
        while midnight < at("2029-01-01T00:00:00Z") {
            for offset in [-1, 0, 1] {
                let now = midnight + chrono::Duration::seconds(offset);
                for window in [Window::Minute, Window::Day] {
                    let start = window.start(now);
                    assert!(start <= now.timestamp(), "{window:?} at {now}");
                    assert!(now < window.end(start), "{window:?} at {now}");
                    assert_eq!(
                        window.start(window.end(start)),
                        window.end(start).timestamp()
                    );
                }
                assert_eq!(
                    Window::Day.start(now),
                    period_start(Some(LimitReset::Daily), now)
                );
            }
            midnight += chrono::Duration::days(1);
        }
    }

    #[test]
    fn the_message_names_the_limit_and_rounds_the_wait_up() {
        let now = at("2026-11-23T12:00:48.500Z");
        let start = Window::Minute.start(now);
        let refused = refusal(RateLimit::FreePerMinute, 20, start, now);
        assert_eq!(refused.window.reset, at("2026-11-23T12:01:00Z"));
        assert_eq!(refused.retry_after, Duration::from_secs(12));
        assert_eq!(
            refused.to_string(),
            "rate limit exceeded: 20 requests per minute for :free models; retry after 12 s"
        );
        let daily = refusal(RateLimit::KeyPerDay, 100, Window::Day.start(now), now);
        assert!(
            daily
                .to_string()
                .starts_with("rate limit exceeded: 100 requests per day for this key;")
        );
        let late = refusal(RateLimit::KeyPerMinute, 1, start - 60, now);
        assert_eq!(
            late.retry_after,
            Duration::from_secs(1),
            "never 0: a client would spin"
        );
    }

    #[tokio::test]
    async fn a_request_held_to_no_limit_never_asks_the_store() {
        // No migrations: any query would fail.
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let limiter = RateLimiter::new(
            LimitsConfig::default(),
            RateCounters::Database(store),
            WallClock::system(),
        );
        let allowance = limiter.admit(&key(None, None), false).await.unwrap();
        assert_eq!(allowance, RateAllowance::default());
    }

    #[tokio::test]
    async fn the_minute_limit_refuses_until_the_next_utc_minute() {
        let (limiter, now) = limiter(LimitsConfig::default()).await;
        let key = key(Some(2), None);
        let first = limiter.admit(&key, false).await.unwrap().tightest.unwrap();
        assert_eq!((first.limit, first.remaining), (2, 1));
        assert_eq!(first.reset, at("2026-11-23T12:01:00Z"));
        limiter.admit(&key, false).await.unwrap();
        let refused = refused(&limiter, &key, false).await;
        assert_eq!(refused.limit, RateLimit::KeyPerMinute);
        assert_eq!(refused.retry_after, Duration::from_secs(30));
        now.set(at("2026-11-23T12:01:00Z"));
        let next = limiter.admit(&key, false).await.unwrap().tightest.unwrap();
        assert_eq!(next.remaining, 1);
    }

    #[tokio::test]
    async fn the_day_limit_refuses_until_midnight_utc_and_a_key_value_beats_the_default() {
        let limits = LimitsConfig {
            requests_per_day: Some(100),
            ..LimitsConfig::default()
        };
        let (limiter, now) = limiter(limits).await;
        let key = key(None, Some(2));
        for minute in ["12:00:30", "12:05:00"] {
            now.set(at(&format!("2026-11-23T{minute}Z")));
            limiter.admit(&key, false).await.unwrap();
        }
        let refused = refused(&limiter, &key, false).await;
        assert_eq!(refused.limit, RateLimit::KeyPerDay);
        assert_eq!(refused.window.limit, 2);
        assert_eq!(refused.window.reset, at("2026-11-24T00:00:00Z"));
        now.set(at("2026-11-24T00:00:00Z"));
        assert!(limiter.admit(&key, false).await.is_ok());
    }

    #[tokio::test]
    async fn free_requests_count_against_the_free_limits_and_a_key_refusal_takes_its_count_back() {
        let limits = LimitsConfig {
            free_requests_per_minute: 3,
            ..LimitsConfig::default()
        };
        let (limiter, _) = limiter(limits).await;
        // One key, seen with and without limits of its own: the free counter is the key's.
        let unlimited = key(None, None);
        for _ in 0..2 {
            limiter.admit(&unlimited, true).await.unwrap();
        }
        let tight = key(Some(2), None);
        // The key's own minute (2) is full after one more free request.
        limiter.admit(&tight, false).await.unwrap();
        limiter.admit(&tight, false).await.unwrap();
        let by_key = refused(&limiter, &tight, true).await;
        assert_eq!(by_key.limit, RateLimit::KeyPerMinute);
        // The refused request did not use up the last free request.
        let last = limiter
            .admit(&unlimited, true)
            .await
            .unwrap()
            .tightest
            .unwrap();
        assert_eq!((last.limit, last.remaining), (3, 0));
        let by_free = refused(&limiter, &unlimited, true).await;
        assert_eq!(by_free.limit, RateLimit::FreePerMinute);
        assert!(limiter.admit(&unlimited, false).await.is_ok());
    }

    #[tokio::test]
    async fn when_both_windows_are_full_the_refusal_waits_for_the_day() {
        let (limiter, now) = limiter(LimitsConfig::default()).await;
        let key = key(Some(1), Some(2));
        limiter.admit(&key, false).await.unwrap();
        assert_eq!(
            refused(&limiter, &key, false).await.limit,
            RateLimit::KeyPerMinute
        );
        now.set(at("2026-11-23T12:01:00Z"));
        limiter.admit(&key, false).await.unwrap();
        let refused = refused(&limiter, &key, false).await;
        assert_eq!(refused.limit, RateLimit::KeyPerDay);
        assert_eq!(refused.window.reset, at("2026-11-24T00:00:00Z"));
    }

    #[tokio::test]
    async fn a_zero_limit_refuses_every_request() {
        let (limiter, _) = limiter(LimitsConfig::default()).await;
        let refused = refused(&limiter, &key(Some(5), Some(0)), false).await;
        assert_eq!(refused.limit, RateLimit::KeyPerDay);
        assert_eq!(refused.window.limit, 0);
    }
}
