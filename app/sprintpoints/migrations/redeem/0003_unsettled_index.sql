-- redeem: find the redemptions not settled yet without a scan (the metrics scrape asks every
-- 15 s, a reconciler will too). Expand-only: a new partial index; tables are small here, so a
-- plain CREATE INDEX inside the migration's transaction is fine.
CREATE INDEX redemptions_unsettled_idx ON redemptions (created_at)
    WHERE status IN ('pending', 'refund_pending');
