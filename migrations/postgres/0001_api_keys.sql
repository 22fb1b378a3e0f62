-- API keys. The key itself is never stored: only its SHA-256 (hex) and a short display prefix.
CREATE TABLE api_keys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT        NOT NULL,
    hash         TEXT        NOT NULL UNIQUE,
    prefix       TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled     BOOLEAN     NOT NULL DEFAULT FALSE,
    -- Spending limit in integer micro-USD (1 USD = 1,000,000); NULL means unlimited.
    credit_limit BIGINT,
    -- 'daily', 'weekly', 'monthly', or NULL for a limit that never resets.
    limit_reset  TEXT CHECK (limit_reset IN ('daily', 'weekly', 'monthly')),
    expires_at   TIMESTAMPTZ
);

COMMENT ON COLUMN api_keys.credit_limit IS 'spending limit in integer micro-USD (1 USD = 1,000,000); NULL is unlimited';
