-- A call no human answered is a callback the doctor owes within 8 hours. Exactly one task is
-- open per caller (the resident, or the number when the caller is unknown); later missed calls
-- attach to it. The unique partial index makes that hold under concurrent calls on many nodes.
CREATE TABLE callback_tasks (
    id                    bigserial PRIMARY KEY,
    caller_key            text NOT NULL,    -- 'resident:<id>' or 'number:<hash hex>'
    resident_id           bigint REFERENCES residents,
    caller_number_hash    bytea NOT NULL,
    caller_number_enc     bytea NOT NULL,
    caller_number_masked  text NOT NULL,
    owner_staff_id        integer REFERENCES staff,   -- NULL: the duty desk owns it
    opened_at             timestamptz NOT NULL,
    due_at                timestamptz NOT NULL,
    status                text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'cancelled')),
    closed_at             timestamptz,
    CHECK (due_at > opened_at),
    CHECK ((status = 'open') = (closed_at IS NULL))
);
CREATE UNIQUE INDEX callback_tasks_one_open ON callback_tasks (caller_key) WHERE status = 'open';
CREATE INDEX callback_tasks_due ON callback_tasks (due_at) WHERE status = 'open';
CREATE INDEX callback_tasks_owner ON callback_tasks (owner_staff_id, due_at) WHERE status = 'open';

-- The missed calls behind a task (the first and every repeat).
CREATE TABLE callback_calls (
    task_id         bigint NOT NULL REFERENCES callback_tasks ON DELETE CASCADE,
    call_record_id  bigint NOT NULL UNIQUE REFERENCES call_records,
    PRIMARY KEY (task_id, call_record_id)
);
