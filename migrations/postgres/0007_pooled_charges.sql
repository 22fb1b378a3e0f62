-- From this version, requests that took no credit hold (keys without a limit, free requests) are
-- charged together: one ledger 'charge' per key per settlement batch, with generation_id NULL, for
-- the sum of their costs (each request's cost stays in generations.cost). Held requests keep their
-- own charge and refund rows.
COMMENT ON COLUMN ledger.generation_id IS 'the generation a hold, refund or excess charge belongs to; NULL for grants and for the pooled charge of a settlement batch''s unheld requests';
