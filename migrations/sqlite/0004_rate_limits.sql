-- Request rate-limit counters, shared by every replica: one row per key and scope, counting the
-- requests admitted in the current fixed UTC windows (the minute, and the day from 00:00 UTC).
-- scope 'key' counts every request of the key against its own limits (api_keys.requests_per_*,
-- else [limits]); 'free' counts its requests for `:free` models against the free-tier limits.
-- A window start is Unix seconds; a row whose start is older than the current window is stale and
-- restarts at 1 on the next request, so nothing needs sweeping. Each check is one atomic upsert
-- that counts a request only if it is admitted.
CREATE TABLE rate_counters (
    key_hash     TEXT   NOT NULL,               -- api_keys.hash
    scope        TEXT   NOT NULL CHECK (scope IN ('key', 'free')),
    minute_start BIGINT NOT NULL,               -- Unix seconds, a multiple of 60
    minute_count BIGINT NOT NULL,               -- requests admitted in that minute
    day_start    BIGINT NOT NULL,               -- Unix seconds, a multiple of 86400 (00:00 UTC)
    day_count    BIGINT NOT NULL,               -- requests admitted that day
    PRIMARY KEY (key_hash, scope)
) WITHOUT ROWID; -- looked up only by its primary key
