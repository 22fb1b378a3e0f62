//! Rate counts in Redis, when `[redis]` is configured: the same counters as the `rate_counters`
//! table, one Lua script per check so each is atomic and a single round trip. Never SQL, and no
//! notion of what a limit means.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;

use super::StoreError;
use super::rate_counters::{RateCheck, RateCounts, RateOutcome, RateScope};

/// KEYS[1] is the counter, a hash of the minute start and count (`ms`, `mc`) and the day's
/// (`ds`, `dc`). ARGV: the request's minute start, day start, per-minute and per-day limits (-1
/// for none), and how many seconds the counter lives after this count. The same rules as the SQL upsert: an older window
/// starts over, a newer one (a replica's clock ahead) is counted into, and a refused request
/// changes nothing. Returns {admitted, ms, mc, ds, dc}.
const COUNT: &str = r"
local v = redis.call('HMGET', KEYS[1], 'ms', 'mc', 'ds', 'dc')
local ms, mc = tonumber(v[1] or '0'), tonumber(v[2] or '0')
local ds, dc = tonumber(v[3] or '0'), tonumber(v[4] or '0')
local now_ms, now_ds = tonumber(ARGV[1]), tonumber(ARGV[2])
local per_minute, per_day = tonumber(ARGV[3]), tonumber(ARGV[4])
if now_ms > ms then ms, mc = now_ms, 0 end
if now_ds > ds then ds, dc = now_ds, 0 end
if (per_minute >= 0 and mc >= per_minute) or (per_day >= 0 and dc >= per_day) then
  return {0, ms, mc, ds, dc}
end
mc, dc = mc + 1, dc + 1
redis.call('HSET', KEYS[1], 'ms', ms, 'mc', mc, 'ds', ds, 'dc', dc)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, ms, mc, ds, dc}
";

/// KEYS[1] is the counter; ARGV the minute and day starts the request was counted in. Each
/// count is taken back only if its window is still the current one.
const UNCOUNT: &str = r"
local v = redis.call('HMGET', KEYS[1], 'ms', 'ds')
if tonumber(v[1] or '0') == tonumber(ARGV[1]) then redis.call('HINCRBY', KEYS[1], 'mc', -1) end
if tonumber(v[2] or '0') == tonumber(ARGV[2]) then redis.call('HINCRBY', KEYS[1], 'dc', -1) end
return 0
";

/// Built once: a script is sent by its SHA-1 and loaded only when Redis does not know it yet.
static COUNT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(COUNT));
static UNCOUNT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(UNCOUNT));

/// How long a counter lives after its last count: past the end of that count's day, with five
/// minutes for a replica whose clock lags; then Redis drops it and nothing needs sweeping.
/// Relative, so it does not matter whether the gateway's clock agrees with Redis's.
const LIFETIME_AFTER_COUNT: i64 = 86_400 + 300;
/// Sent for a window without a limit.
const NO_LIMIT: i64 = -1;

/// A multiplexed connection to Redis that reconnects by itself. Cheap to clone.
#[derive(Clone)]
pub struct RedisCounters {
    connection: ConnectionManager,
}

impl RedisCounters {
    /// Connects now, so a wrong URL or an unreachable server fails startup rather than requests.
    pub async fn connect(url: &str) -> Result<RedisCounters, StoreError> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new(client).await?;
        Ok(RedisCounters { connection })
    }

    pub(super) async fn count(
        &self,
        key_hash: &str,
        scope: RateScope,
        check: &RateCheck,
    ) -> Result<RateOutcome, StoreError> {
        let limit = |limit: Option<u32>| limit.map_or(NO_LIMIT, i64::from);
        let mut connection = self.connection.clone();
        let (admitted, minute_start, minute_count, day_start, day_count): (
            i64,
            i64,
            i64,
            i64,
            i64,
        ) = COUNT_SCRIPT
            .key(counter(key_hash, scope))
            .arg(check.minute_start)
            .arg(check.day_start)
            .arg(limit(check.per_minute))
            .arg(limit(check.per_day))
            .arg(LIFETIME_AFTER_COUNT)
            .invoke_async(&mut connection)
            .await?;
        let counts = RateCounts {
            minute_start,
            minute_count,
            day_start,
            day_count,
        };
        Ok(if admitted == 1 {
            RateOutcome::Admitted(counts)
        } else {
            RateOutcome::Refused(counts)
        })
    }

    pub(super) async fn uncount(
        &self,
        key_hash: &str,
        scope: RateScope,
        counted: &RateCounts,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let () = UNCOUNT_SCRIPT
            .key(counter(key_hash, scope))
            .arg(counted.minute_start)
            .arg(counted.day_start)
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }
}

/// Namespaced, so the gateway can share a Redis with other applications.
fn counter(key_hash: &str, scope: RateScope) -> String {
    format!("switchyard:rate:{}:{key_hash}", scope.as_str())
}
