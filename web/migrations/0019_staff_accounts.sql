-- Console sign-in: one account per staff row (web/accounts.py, `hotline staff password BH0001`).
--
-- Only argon2id hashes are stored, never a password or a one-time code. An account has at most
-- one usable credential: a password, or (after a reset) a one-time code that signs in only to set
-- a new password (must_change) and expires; issuing a code drops the old password, so a reset
-- really locks the old one out.
--
-- failed_count / locked_until are here rather than in Redis so that an account's lock survives
-- a restart and holds on every node. (The per-address throttle lives in Redis: it spans accounts.)
CREATE TABLE staff_accounts (
    staff_id             integer PRIMARY KEY REFERENCES staff ON DELETE CASCADE,
    password_hash        text CHECK (password_hash LIKE '$argon2id$%'),
    must_change          boolean NOT NULL DEFAULT false,
    one_time_code_hash   text CHECK (one_time_code_hash LIKE '$argon2id$%'),
    one_time_code_expires_at timestamptz,
    password_changed_at  timestamptz,
    failed_count         integer NOT NULL DEFAULT 0 CHECK (failed_count >= 0),
    locked_until         timestamptz,
    last_sign_in_at      timestamptz,
    CHECK ((one_time_code_hash IS NULL) = (one_time_code_expires_at IS NULL)),
    CHECK (one_time_code_hash IS NULL OR must_change)
);
