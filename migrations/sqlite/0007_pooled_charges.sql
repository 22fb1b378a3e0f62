-- From this version, requests that took no credit hold (keys without a limit, free requests) are
-- charged together: one ledger 'charge' per key per settlement batch, with generation_id NULL, for
-- the sum of their costs (each request's cost stays in generations.cost). Held requests keep their
-- own charge and refund rows. Nothing to change in the schema; this records when it began.
SELECT 1;
