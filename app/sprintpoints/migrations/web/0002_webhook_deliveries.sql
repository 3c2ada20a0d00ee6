-- web: the code host's webhook deliveries already answered, so a redelivery (GitHub's
-- "Redeliver" button, or a retry after a lost answer) gets the first answer and credits
-- nothing again. Expand-only: a new table the version before ignores.
CREATE TABLE webhook_deliveries (
    delivery_id  text PRIMARY KEY,   -- X-GitHub-Delivery
    project      text NOT NULL,
    event        text NOT NULL,      -- X-GitHub-Event
    response     json NOT NULL,      -- json (not jsonb) keeps the answer byte for byte
    created_at   timestamptz NOT NULL DEFAULT now()
);
