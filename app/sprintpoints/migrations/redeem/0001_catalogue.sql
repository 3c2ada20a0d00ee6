-- redeem: the reward catalogue, redemptions and idempotency keys.
CREATE TABLE rewards (
    sku          text PRIMARY KEY,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    cost         integer NOT NULL CHECK (cost > 0),
    active       boolean NOT NULL DEFAULT true
);

CREATE TABLE redemptions (
    id               text PRIMARY KEY,
    handle           text NOT NULL,
    sku              text NOT NULL REFERENCES rewards (sku),
    quantity         integer NOT NULL CHECK (quantity > 0),
    points_spent     bigint NOT NULL CHECK (points_spent > 0),
    status           text NOT NULL
                     CHECK (status IN ('pending', 'fulfilled', 'rejected', 'failed', 'refund_pending')),
    balance_after    bigint,
    vendor_order_id  text,
    error_code       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX redemptions_handle_idx ON redemptions (handle);

CREATE TABLE idempotency_keys (
    key           text PRIMARY KEY,
    request_hash  text NOT NULL,
    status_code   integer,
    response      json,         -- json (not jsonb) keeps the stored body byte-for-byte
    created_at    timestamptz NOT NULL DEFAULT now()
);
