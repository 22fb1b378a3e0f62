-- Credits: the materialised state the request path checks, the append-only ledger it sums, the
-- holds of requests in flight, and per-day usage rollups so that nobody scans `generations`.
-- Every amount is signed integer micro-USD (1 USD = 1,000,000); timestamps are RFC 3339 UTC text.

-- Per-key request rate limits; NULL falls back to the configured default ([limits]).
ALTER TABLE api_keys ADD COLUMN requests_per_minute INTEGER;
ALTER TABLE api_keys ADD COLUMN requests_per_day INTEGER;

-- One row per key, created with the key. Invariant: balance = SUM(ledger.amount) for the key.
CREATE TABLE key_credits (
    key_hash     TEXT   PRIMARY KEY,           -- api_keys.hash
    balance      BIGINT NOT NULL DEFAULT 0,    -- grants minus charges plus refunds
    usage        BIGINT NOT NULL DEFAULT 0,    -- settled cost, all time
    held         BIGINT NOT NULL DEFAULT 0,    -- open holds of requests in flight
    period_start BIGINT NOT NULL DEFAULT 0,    -- Unix seconds: start of the current limit period
    period_spent BIGINT NOT NULL DEFAULT 0     -- settled cost plus open holds in that period
);

-- Append-only. grant: the key's limit was set or changed (the difference, so grants sum to the
-- limit); charge: a request's hold before it is sent, or the part of its cost above its hold;
-- refund: the part of a hold the request did not use, or a whole hold released after a crash.
-- Per generation, -SUM(amount) of its charges and refunds is exactly generations.cost.
CREATE TABLE ledger (
    id            INTEGER     PRIMARY KEY AUTOINCREMENT,
    key_hash      TEXT        NOT NULL,
    kind          TEXT        NOT NULL CHECK (kind IN ('grant', 'charge', 'refund')),
    amount        BIGINT      NOT NULL,
    generation_id TEXT,
    created_at    TEXT        NOT NULL
);
CREATE INDEX ledger_key_hash_id ON ledger (key_hash, id);
CREATE INDEX ledger_generation_id ON ledger (generation_id) WHERE generation_id IS NOT NULL;

-- Worst-case costs reserved by requests in flight. The holding process renews expires_at while it
-- lives; a hold whose holder died (kill -9) expires and is refunded by any gateway's sweeper.
CREATE TABLE credit_holds (
    generation_id TEXT        PRIMARY KEY,
    key_hash      TEXT        NOT NULL,
    amount        BIGINT      NOT NULL,
    period_start  BIGINT      NOT NULL,
    holder        TEXT        NOT NULL,
    expires_at    TEXT        NOT NULL
);
CREATE INDEX credit_holds_expires_at ON credit_holds (expires_at);
CREATE INDEX credit_holds_holder ON credit_holds (holder);

-- Usage per UTC day, key, model, provider and app, updated with every batch of generations.
-- provider and app are '' when absent (so they can be part of the key); app is the caller's
-- HTTP-Referer, else its X-Title.
CREATE TABLE usage_rollups (
    day                TEXT   NOT NULL,
    key_hash           TEXT   NOT NULL,
    model              TEXT   NOT NULL,
    provider           TEXT   NOT NULL,
    app                TEXT   NOT NULL,
    requests           BIGINT NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    cached_tokens      BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    reasoning_tokens   BIGINT NOT NULL,
    cost               BIGINT NOT NULL,
    PRIMARY KEY (day, key_hash, model, provider, app)
);
CREATE INDEX usage_rollups_key_hash_day ON usage_rollups (key_hash, day);

-- Existing data, so that upgraded databases start consistent.
INSERT INTO usage_rollups
SELECT date(created_at), key_hash, model, COALESCE(provider, ''),
       COALESCE(app_referer, app_title, ''), COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
       SUM(cached_tokens), SUM(cache_write_tokens), SUM(reasoning_tokens), SUM(cost)
FROM generations
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO ledger (key_hash, kind, amount, created_at)
SELECT hash, 'grant', credit_limit, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') FROM api_keys WHERE credit_limit IS NOT NULL;
INSERT INTO ledger (key_hash, kind, amount, generation_id, created_at)
SELECT key_hash, 'charge', -cost, id, created_at FROM generations WHERE cost > 0;

INSERT INTO key_credits (key_hash, balance, usage, period_spent)
SELECT k.hash,
       COALESCE(k.credit_limit, 0) - COALESCE(g.cost, 0),
       COALESCE(g.cost, 0),
       COALESCE(g.cost, 0)
FROM api_keys k
LEFT JOIN (SELECT key_hash, SUM(cost) AS cost FROM generations GROUP BY key_hash) g
       ON g.key_hash = k.hash;

-- Dashboards read the rollups now; these two indexes only served scans of generations.
DROP INDEX generations_created_at;
DROP INDEX generations_model_created_at;

DROP VIEW usage_daily;
-- Requests, tokens and spend per UTC day, key, model and provider (NULL when none served).
-- day is 'YYYY-MM-DD' (UTC); cost is integer micro-USD.
CREATE VIEW usage_daily AS
SELECT
    day,
    key_hash,
    model,
    NULLIF(provider, '')             AS provider,
    SUM(requests)            AS requests,
    SUM(prompt_tokens)       AS prompt_tokens,
    SUM(completion_tokens)   AS completion_tokens,
    SUM(cached_tokens)       AS cached_tokens,
    SUM(cache_write_tokens)  AS cache_write_tokens,
    SUM(reasoning_tokens)    AS reasoning_tokens,
    SUM(cost)                AS cost
FROM usage_rollups
GROUP BY day, key_hash, model, provider;

-- Spend per UTC day and app, across keys and models.
CREATE VIEW usage_by_app AS
SELECT
    day,
    NULLIF(app, '')                  AS app,
    SUM(requests)            AS requests,
    SUM(prompt_tokens + completion_tokens) AS tokens,
    SUM(cost)                AS cost
FROM usage_rollups
GROUP BY day, app;

-- Each key with its limit and what is left of it in the current period (holds included).
CREATE VIEW key_balances AS
SELECT
    k.hash          AS key_hash,
    k.name,
    k.disabled,
    k.credit_limit,
    k.limit_reset,
    c.usage,
    c.held,
    c.period_spent,
    CASE WHEN k.credit_limit IS NULL THEN NULL
         ELSE k.credit_limit - c.period_spent END AS limit_remaining,
    c.balance
FROM api_keys k
JOIN key_credits c ON c.key_hash = k.hash;

