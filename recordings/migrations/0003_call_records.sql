-- The record of every call that reaches the service (CDR), written at INVITE time and updated as
-- the call goes, so a crash still leaves the row (ended_at NULL = ended by the crash).
CREATE TABLE call_records (
    id                    bigserial PRIMARY KEY,
    call_id               text NOT NULL UNIQUE CHECK (call_id <> ''),   -- SIP Call-ID
    caller_number_hash    bytea,            -- keyed hash of the normalized number (store/pii.py)
    caller_number_enc     bytea,
    caller_number_masked  text NOT NULL DEFAULT '',
    resident_id           bigint REFERENCES residents,
    offered_at            timestamptz NOT NULL,
    answered_at           timestamptz,      -- the service (IVR) answered
    connected_at          timestamptz,      -- a human answered
    ended_at              timestamptz,
    route_service         text CHECK (route_service IN ('day', 'night')),
    route_reason          text NOT NULL DEFAULT '',
    route_targets         jsonb NOT NULL DEFAULT '[]',
    disposition           text NOT NULL DEFAULT 'in_progress' CHECK (disposition IN (
                              'in_progress', 'connected', 'missed', 'abandoned', 'ivr_only',
                              'failed')),
    recording_path        text,
    recording_seconds     numeric(10, 3),
    recording_sha256      text CHECK (recording_sha256 ~ '^[0-9a-f]{64}$'),
    CHECK ((caller_number_enc IS NULL) = (caller_number_hash IS NULL)),
    CHECK (ended_at IS NULL OR ended_at >= offered_at)
);
CREATE INDEX call_records_resident ON call_records (resident_id, offered_at) WHERE resident_id IS NOT NULL;
CREATE INDEX call_records_open ON call_records (offered_at) WHERE ended_at IS NULL;

-- Every target rung for a call, in order, with what happened.
CREATE TABLE dial_attempts (
    call_record_id  bigint NOT NULL REFERENCES call_records ON DELETE CASCADE,
    seq             smallint NOT NULL CHECK (seq >= 1),
    staff_id        integer REFERENCES staff,
    sip_uri         text NOT NULL,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    outcome         text CHECK (outcome IN (
                        'answered', 'busy', 'no_answer', 'rejected', 'unreachable', 'cancelled')),
    PRIMARY KEY (call_record_id, seq)
);
