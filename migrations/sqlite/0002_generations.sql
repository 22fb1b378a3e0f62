-- One row per request, written by the gateway in batches shortly after the request ends.
-- This table and the usage_daily view are a public interface: dashboards read them directly.
--
-- Units:
--   cost        integer micro-USD (1 USD = 1,000,000), rounded once per request; never a float.
--   created_at  UTC, RFC 3339 text (e.g. 2025-01-31T12:00:00.123456+00:00); SQLite's date and time
--               functions read it as is.
--   *_ms        milliseconds; ttft_ms is NULL when no token arrived.
--   status      the HTTP status returned to the caller.
--   attempts    JSON array, one object per upstream attempt (provider, model, status, latency_ms, error).
CREATE TABLE generations (
    id                 TEXT    PRIMARY KEY,  -- gen-...
    key_hash           TEXT    NOT NULL,     -- api_keys.hash
    model              TEXT    NOT NULL,
    provider           TEXT,
    upstream_model     TEXT,
    app_referer        TEXT,
    app_title          TEXT,
    created_at         TEXT    NOT NULL,
    latency_ms         BIGINT  NOT NULL,
    ttft_ms            BIGINT,
    prompt_tokens      BIGINT  NOT NULL DEFAULT 0,
    completion_tokens  BIGINT  NOT NULL DEFAULT 0,
    cached_tokens      BIGINT  NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT  NOT NULL DEFAULT 0,
    reasoning_tokens   BIGINT  NOT NULL DEFAULT 0,
    cost               BIGINT  NOT NULL DEFAULT 0,
    status             INTEGER NOT NULL,
    finish_reason      TEXT,
    streamed           BOOLEAN NOT NULL,
    cancelled          BOOLEAN NOT NULL,
    attempts           TEXT    NOT NULL DEFAULT '[]',
    error              TEXT
);

CREATE INDEX generations_key_hash_created_at ON generations (key_hash, created_at);
CREATE INDEX generations_created_at ON generations (created_at);
CREATE INDEX generations_model_created_at ON generations (model, created_at);

-- Requests, tokens and spend per UTC day, key, model and provider.
-- day is 'YYYY-MM-DD' (UTC); cost is integer micro-USD; provider is NULL for requests that never
-- reached one.
CREATE VIEW usage_daily AS
SELECT
    date(created_at)        AS day,
    key_hash,
    model,
    provider,
    COUNT(*)                AS requests,
    SUM(prompt_tokens)      AS prompt_tokens,
    SUM(completion_tokens)  AS completion_tokens,
    SUM(cached_tokens)      AS cached_tokens,
    SUM(reasoning_tokens)   AS reasoning_tokens,
    SUM(cost)               AS cost
FROM generations
GROUP BY date(created_at), key_hash, model, provider;
