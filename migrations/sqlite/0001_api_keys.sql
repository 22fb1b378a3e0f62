-- API keys. The key itself is never stored: only its SHA-256 (hex) and a short display prefix.
-- Timestamps are UTC, written by the gateway as RFC 3339 text (e.g. 2025-01-31T12:00:00.123456+00:00).
CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT    NOT NULL,
    hash         TEXT    NOT NULL UNIQUE,
    prefix       TEXT    NOT NULL,
    created_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    disabled     BOOLEAN NOT NULL DEFAULT 0,
    -- Spending limit in integer micro-USD (1 USD = 1,000,000); NULL means unlimited.
    credit_limit BIGINT,
    -- 'daily', 'weekly', 'monthly', or NULL for a limit that never resets.
    limit_reset  TEXT CHECK (limit_reset IN ('daily', 'weekly', 'monthly')),
    expires_at   TEXT
);
