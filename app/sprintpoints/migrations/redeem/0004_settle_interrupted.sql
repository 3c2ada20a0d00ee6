-- redeem: what the reconciler needs to settle a redemption that a crash interrupted.
-- Expand-only: a nullable column and two partial indexes; the old version ignores them.
-- An idempotency key names the redemption it started, so that the reconciler can store the
-- redemption's final answer for a client that replays the key (and never the answer of
-- another redemption that reused a released key).
ALTER TABLE idempotency_keys ADD COLUMN redemption_id text;

CREATE INDEX idempotency_keys_redemption_idx ON idempotency_keys (redemption_id)
    WHERE redemption_id IS NOT NULL;

-- Keys claimed by a request that never answered.
CREATE INDEX idempotency_keys_unanswered_idx ON idempotency_keys (created_at)
    WHERE status_code IS NULL;
