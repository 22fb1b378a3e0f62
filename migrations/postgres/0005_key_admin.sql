-- When a key's name, limit, reset or disabled flag last changed through the provisioning API or
-- the CLI; NULL for a key never changed since it was created.
ALTER TABLE api_keys ADD COLUMN updated_at TIMESTAMPTZ;
