//! Rate counts: the `rate_counters` table (or Redis, when configured) and the per-key rate-limit
//! columns of `api_keys`; one atomic statement per check. Knows windows as numbers; what a limit
//! means is for accounts.

use super::redis_counters::RedisCounters;
use super::{Store, StoreError, on_pool};

/// Which of a key's counters: all its requests, or only those for `:free` models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    Key,
    Free,
}

impl RateScope {
    /// The spelling stored in `rate_counters.scope` and in Redis keys.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RateScope::Key => "key",
            RateScope::Free => "free",
        }
    }
}

/// One request to count: the windows it falls in and the most each may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateCheck {
    /// Unix seconds of the current minute and UTC day.
    pub minute_start: i64,
    pub day_start: i64,
    /// `None` counts without limiting, so the other window's count stays right.
    pub per_minute: Option<u32>,
    pub per_day: Option<u32>,
}

/// A counter row: the windows it counts in and the requests admitted in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct RateCounts {
    pub minute_start: i64,
    pub minute_count: i64,
    pub day_start: i64,
    pub day_count: i64,
}

impl RateCounts {
    /// A counter that has counted nothing in the check's windows.
    fn empty(check: &RateCheck) -> RateCounts {
        RateCounts {
            minute_start: check.minute_start,
            minute_count: 0,
            day_start: check.day_start,
            day_count: 0,
        }
    }
}

/// What became of a request [`RateCounters::count`] was asked to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOutcome {
    /// Counted; the counts include it.
    Admitted(RateCounts),
    /// A window was full; nothing was counted. The counts as they stood, to say which window.
    Refused(RateCounts),
}

/// Where rate counts live: the shared database, or Redis when `[redis]` is configured (one round
/// trip even to explain a refusal, and no write load on the database). Cheap to clone.
#[derive(Clone)]
pub enum RateCounters {
    Database(Store),
    Redis(RedisCounters),
}

impl std::fmt::Debug for RateCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RateCounters::Database(_) => "RateCounters::Database",
            RateCounters::Redis(_) => "RateCounters::Redis",
        })
    }
}

impl RateCounters {
    /// Counts one request if neither window has reached its limit, atomically.
    pub async fn count(
        &self,
        key_hash: &str,
        scope: RateScope,
        check: &RateCheck,
    ) -> Result<RateOutcome, StoreError> {
        match self {
            RateCounters::Database(store) => {
                if let Some(counts) = store.count_request(key_hash, scope, check).await? {
                    return Ok(RateOutcome::Admitted(counts));
                }
                // Refusals are the rare path: a second statement to explain them is fine.
                let stored = store.rate_counts(key_hash, scope).await?;
                Ok(RateOutcome::Refused(
                    stored.unwrap_or_else(|| RateCounts::empty(check)),
                ))
            }
            RateCounters::Redis(redis) => redis.count(key_hash, scope, check).await,
        }
    }

    /// Takes back a request [`RateCounters::count`] admitted, when another scope refused it; a
    /// window that has moved on since is left alone.
    pub async fn uncount(
        &self,
        key_hash: &str,
        scope: RateScope,
        counted: &RateCounts,
    ) -> Result<(), StoreError> {
        match self {
            RateCounters::Database(store) => store.uncount_request(key_hash, scope, counted).await,
            RateCounters::Redis(redis) => redis.uncount(key_hash, scope, counted).await,
        }
    }
}

impl Store {
    /// Counts one request if neither window is full, atomically: `None` when it is refused, and
    /// then nothing was counted. A stored window older than the request's starts over at 1; a
    /// newer one (another replica's clock is a little ahead) is counted in, so a counter never
    /// goes back to an earlier window.
    async fn count_request(
        &self,
        key_hash: &str,
        scope: RateScope,
        check: &RateCheck,
    ) -> Result<Option<RateCounts>, StoreError> {
        let sql = "INSERT INTO rate_counters \
             (key_hash, scope, minute_start, minute_count, day_start, day_count) \
             VALUES ($1, $2, $3, 1, $4, 1) \
             ON CONFLICT (key_hash, scope) DO UPDATE SET \
             minute_count = CASE WHEN excluded.minute_start > rate_counters.minute_start \
                 THEN 1 ELSE rate_counters.minute_count + 1 END, \
             minute_start = CASE WHEN excluded.minute_start > rate_counters.minute_start \
                 THEN excluded.minute_start ELSE rate_counters.minute_start END, \
             day_count = CASE WHEN excluded.day_start > rate_counters.day_start \
                 THEN 1 ELSE rate_counters.day_count + 1 END, \
             day_start = CASE WHEN excluded.day_start > rate_counters.day_start \
                 THEN excluded.day_start ELSE rate_counters.day_start END \
             WHERE ($5 IS NULL OR excluded.minute_start > rate_counters.minute_start \
                    OR rate_counters.minute_count < $5) \
               AND ($6 IS NULL OR excluded.day_start > rate_counters.day_start \
                    OR rate_counters.day_count < $6) \
             RETURNING minute_start, minute_count, day_start, day_count";
        let counts = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(key_hash)
            .bind(scope.as_str())
            .bind(check.minute_start)
            .bind(check.day_start)
            .bind(check.per_minute.map(i64::from))
            .bind(check.per_day.map(i64::from))
            .fetch_optional(pool)
            .await?);
        Ok(counts)
    }

    /// The counter as stored: read only to explain a refusal (which window, until when).
    pub async fn rate_counts(
        &self,
        key_hash: &str,
        scope: RateScope,
    ) -> Result<Option<RateCounts>, StoreError> {
        let sql = "SELECT minute_start, minute_count, day_start, day_count FROM rate_counters \
                   WHERE key_hash = $1 AND scope = $2";
        let counts = on_pool!(self, pool => sqlx::query_as(sql)
            .bind(key_hash)
            .bind(scope.as_str())
            .fetch_optional(pool)
            .await?);
        Ok(counts)
    }

    /// Takes back a request [`Store::count_request`] counted (see [`RateCounters::uncount`]).
    async fn uncount_request(
        &self,
        key_hash: &str,
        scope: RateScope,
        counted: &RateCounts,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE rate_counters SET \
             minute_count = CASE WHEN minute_start = $3 THEN minute_count - 1 \
                 ELSE minute_count END, \
             day_count = CASE WHEN day_start = $4 THEN day_count - 1 ELSE day_count END \
             WHERE key_hash = $1 AND scope = $2";
        on_pool!(self, pool => sqlx::query(sql)
            .bind(key_hash)
            .bind(scope.as_str())
            .bind(counted.minute_start)
            .bind(counted.day_start)
            .execute(pool)
            .await
            .map(drop)?);
        Ok(())
    }

    /// Sets a key's own request limits (`None` falls back to `[limits]`); returns whether the key
    /// exists. Replicas see the change within the key cache's window.
    pub async fn set_key_rate_limits(
        &self,
        hash: &str,
        per_minute: Option<u32>,
        per_day: Option<u32>,
    ) -> Result<bool, StoreError> {
        // The columns are 32-bit signed; a limit beyond that is no limit in practice.
        let column = |limit: Option<u32>| limit.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        let sql = "UPDATE api_keys SET requests_per_minute = $1, requests_per_day = $2 \
                   WHERE hash = $3";
        let updated = on_pool!(self, pool => sqlx::query(sql)
            .bind(column(per_minute))
            .bind(column(per_day))
            .bind(hash)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(updated > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> Store {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    fn check(minute_start: i64, per_minute: u32, per_day: u32) -> RateCheck {
        RateCheck {
            minute_start,
            day_start: 0,
            per_minute: Some(per_minute),
            per_day: Some(per_day),
        }
    }

    #[tokio::test]
    async fn a_full_window_refuses_without_counting_and_a_new_minute_starts_over() {
        let store = store().await;
        let count = |check: RateCheck| {
            let store = store.clone();
            async move {
                store
                    .count_request("h", RateScope::Key, &check)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            count(check(60, 2, 10)).await.map(|c| c.minute_count),
            Some(1)
        );
        assert_eq!(
            count(check(60, 2, 10)).await.map(|c| c.minute_count),
            Some(2)
        );
        assert_eq!(count(check(60, 2, 10)).await, None);
        let stored = store.rate_counts("h", RateScope::Key).await.unwrap();
        assert_eq!(stored.map(|c| (c.minute_count, c.day_count)), Some((2, 2)));
        let next = count(check(120, 2, 10)).await.unwrap();
        assert_eq!(
            (next.minute_start, next.minute_count, next.day_count),
            (120, 1, 3)
        );
        // A replica whose clock lags counts into the newer window rather than rewinding it.
        let late = count(check(60, 2, 10)).await.unwrap();
        assert_eq!((late.minute_start, late.minute_count), (120, 2));
    }

    #[tokio::test]
    async fn the_day_window_refuses_even_when_the_minute_has_room_and_scopes_count_apart() {
        let store = store().await;
        for minute in 1..=3 {
            let counted = store
                .count_request("h", RateScope::Free, &check(minute * 60, 5, 3))
                .await
                .unwrap();
            assert!(counted.is_some());
        }
        let refused = store
            .count_request("h", RateScope::Free, &check(240, 5, 3))
            .await
            .unwrap();
        assert_eq!(refused, None);
        let other = store
            .count_request("h", RateScope::Key, &check(240, 5, 3))
            .await
            .unwrap();
        assert_eq!(other.map(|c| c.day_count), Some(1));
    }

    #[tokio::test]
    async fn uncounting_takes_back_one_request_in_the_same_windows_only() {
        let store = store().await;
        let unlimited = RateCheck {
            minute_start: 60,
            day_start: 0,
            per_minute: None,
            per_day: None,
        };
        store
            .count_request("h", RateScope::Key, &unlimited)
            .await
            .unwrap();
        let counted = store
            .count_request("h", RateScope::Key, &unlimited)
            .await
            .unwrap()
            .unwrap();
        store
            .uncount_request("h", RateScope::Key, &counted)
            .await
            .unwrap();
        let stale = RateCounts {
            minute_start: 0,
            ..counted
        };
        store
            .uncount_request("h", RateScope::Key, &stale)
            .await
            .unwrap();
        let stored = store
            .rate_counts("h", RateScope::Key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((stored.minute_count, stored.day_count), (1, 0));
    }
}
