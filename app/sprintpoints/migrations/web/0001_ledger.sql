-- web: the points ledger. Balances never go negative (CHECK + conditional debit UPDATE).
CREATE TABLE accounts (
    handle      text PRIMARY KEY,
    balance     bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    earned      bigint NOT NULL DEFAULT 0 CHECK (earned >= 0),
    spent       bigint NOT NULL DEFAULT 0 CHECK (spent >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX accounts_leaderboard_idx ON accounts (earned DESC, handle);

-- A contribution is counted once: (project, kind, ref) is unique.
CREATE TABLE contributions (
    id             bigserial PRIMARY KEY,
    handle         text NOT NULL,
    project        text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('commit', 'issue')),
    ref            text NOT NULL,
    points         integer NOT NULL CHECK (points >= 0),
    balance_after  bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contributions_once UNIQUE (project, kind, ref)
);

CREATE INDEX contributions_handle_idx ON contributions (handle);

-- A debit is taken once per redemption: ref (the redemption id) is the primary key.
CREATE TABLE debits (
    ref            text PRIMARY KEY,
    handle         text NOT NULL,
    amount         bigint NOT NULL CHECK (amount > 0),
    balance_after  bigint,
    refunded       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    refunded_at    timestamptz
);
