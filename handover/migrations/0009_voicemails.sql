-- Messages left when nobody could take the call (issue 4): recorded to the same store as call
-- recordings, attached to the callback task the doctor works, so the message is heard before
-- calling back. A task may collect several (one per missed call).
CREATE TABLE voicemails (
    id              bigserial PRIMARY KEY,
    task_id         bigint NOT NULL REFERENCES callback_tasks ON DELETE CASCADE,
    call_record_id  bigint NOT NULL UNIQUE REFERENCES call_records,
    path            text NOT NULL,
    seconds         numeric(10, 3) NOT NULL CHECK (seconds >= 0),
    sha256          text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    recorded_at     timestamptz NOT NULL
);
CREATE INDEX voicemails_task ON voicemails (task_id, recorded_at);
