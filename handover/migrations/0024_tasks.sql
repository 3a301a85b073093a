-- One task model for every promise the hotline makes (issue 11). The callback tasks become the
-- first kind of `tasks`; a kind's rules are one row of `task_kinds`, so a new kind of promise is a
-- row here and a small module in handover/, not a copy of the table.
--
-- Every change of a task is an event: `version` counts the events, an UPDATE must raise it by
-- exactly one, and the transaction that writes it must also write the event of that version
-- (checked at commit by a deferred constraint trigger). Tasks and events are never deleted.

CREATE TABLE task_kinds (
    kind                   text PRIMARY KEY CHECK (kind ~ '^[a-z_]+$'),
    title                  text NOT NULL,           -- as the console names it (Chinese)
    due_after              interval,                -- due = opened + due_after …
    due_next_working_day   time,                    -- … or this time of the next working day
    needs_call             boolean NOT NULL,        -- "done" needs an answered call since opening
    retry_after            interval NOT NULL DEFAULT '30 minutes',
    attempts_to_unreachable smallint NOT NULL DEFAULT 3 CHECK (attempts_to_unreachable >= 1),
    warn_before            interval NOT NULL DEFAULT '1 hour',
    outcomes               text[] NOT NULL DEFAULT '{}',   -- what a close must say ({}: free)
    CHECK ((due_after IS NULL) <> (due_next_working_day IS NULL))
);
INSERT INTO task_kinds (kind, title, due_after, due_next_working_day, needs_call, outcomes) VALUES
    ('callback',          '未接来电回拨', '8 hours',  NULL,    true,  '{}'),
    ('referral_followup', '转诊回访',     '72 hours', NULL,    true,
        '{seen,admitted,not_gone,other}'),
    ('handover',          '夜间交班事项', NULL,       '09:00', false, '{}'),
    ('rx_review',         '处方药审核',   '24 hours', NULL,    false, '{approved,rejected}'),
    ('complaint',         '投诉处理',     '72 hours', NULL,    true,  '{}');

ALTER TABLE callback_tasks RENAME TO tasks;
ALTER SEQUENCE callback_tasks_id_seq RENAME TO tasks_id_seq;
ALTER INDEX callback_tasks_pkey RENAME TO tasks_pkey;
ALTER INDEX callback_tasks_due RENAME TO tasks_due;
ALTER INDEX callback_tasks_owner RENAME TO tasks_owner;
DROP INDEX callback_tasks_one_open;

ALTER TABLE tasks
    ADD COLUMN kind text NOT NULL DEFAULT 'callback' REFERENCES task_kinds,
    ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    ADD COLUMN summary text NOT NULL DEFAULT '' CHECK (length(summary) <= 2000),
    ADD COLUMN attempts smallint NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN last_attempt_at timestamptz,
    ADD COLUMN warned_at timestamptz,        -- the 1-hour warning was raised
    ADD COLUMN overdue_at timestamptz,       -- the breach was seen (the instant it happened)
    ADD COLUMN escalated_at timestamptz,
    ADD COLUMN closed_by integer REFERENCES staff,
    ADD COLUMN close_note text CHECK (length(close_note) <= 4000),
    ADD COLUMN close_outcome text,
    ADD COLUMN late_reason text CHECK (length(late_reason) <= 2000),
    ADD COLUMN evidence_call_id bigint REFERENCES call_records;
ALTER TABLE tasks ALTER COLUMN kind DROP DEFAULT;  -- a new task says what it is
ALTER TABLE tasks ALTER COLUMN caller_number_hash DROP NOT NULL,
                  ALTER COLUMN caller_number_enc DROP NOT NULL,
                  ALTER COLUMN caller_number_masked SET DEFAULT '';
ALTER TABLE tasks DROP CONSTRAINT callback_tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('open', 'done', 'unreachable', 'cancelled'));
ALTER TABLE tasks ADD CONSTRAINT tasks_callback_has_number
    CHECK (kind <> 'callback' OR caller_number_hash IS NOT NULL);
ALTER TABLE tasks ADD CONSTRAINT tasks_has_subject
    CHECK (resident_id IS NOT NULL OR caller_number_hash IS NOT NULL);
-- (tasks closed before the model have no note: an empty one, so the rule below holds for them)
UPDATE tasks SET close_note = '' WHERE status <> 'open';
ALTER TABLE tasks ADD CONSTRAINT tasks_done_has_note
    CHECK (status NOT IN ('done', 'unreachable') OR close_note IS NOT NULL);
-- One open callback per caller (later missed calls attach to it). Other kinds may be many.
CREATE UNIQUE INDEX tasks_one_open_callback ON tasks (caller_key)
    WHERE status = 'open' AND kind = 'callback';
CREATE INDEX tasks_resident ON tasks (resident_id, opened_at DESC) WHERE resident_id IS NOT NULL;

CREATE TABLE task_events (
    id              bigserial PRIMARY KEY,
    task_id         bigint NOT NULL REFERENCES tasks,
    version         integer NOT NULL,        -- the task's version this event made
    at              timestamptz NOT NULL,
    actor_staff_id  integer REFERENCES staff,   -- NULL: the hotline itself
    event           text NOT NULL CHECK (event ~ '^[a-z_]+$'),
    owner_from      integer REFERENCES staff,
    owner_to        integer REFERENCES staff,
    reason          text NOT NULL DEFAULT '' CHECK (length(reason) <= 2000),
    detail          jsonb NOT NULL DEFAULT '{}',
    UNIQUE (task_id, version)
);

-- The tasks there were get the event that opened them (and closed them, if they were closed).
INSERT INTO task_events (task_id, version, at, event, owner_to, reason)
SELECT id, 1, opened_at, 'opened', owner_staff_id, 'missed call' FROM tasks;
UPDATE tasks SET version = 2 WHERE status <> 'open';
INSERT INTO task_events (task_id, version, at, event, reason, detail)
SELECT id, 2, closed_at, 'closed', 'before the task model', jsonb_build_object('status', status)
  FROM tasks WHERE status <> 'open';

-- Only a benchmark emptying its own synthetic database may say so (SET hotline.purge_bench = 'yes');
-- the service and the CLI never do. The trigger guards against a mistake in our code, not against
-- the database's owner, who could drop it.
CREATE FUNCTION tasks_never_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('hotline.purge_bench', true) = 'yes' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% rows are never deleted', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER tasks_no_delete BEFORE DELETE OR TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_never_deleted();
CREATE TRIGGER task_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON task_events
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_never_deleted();

CREATE FUNCTION tasks_version_step() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version <> OLD.version + 1 THEN
        RAISE EXCEPTION 'task % changed without an event (version % -> %)',
            OLD.id, OLD.version, NEW.version USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tasks_version_step BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_version_step();

CREATE FUNCTION tasks_event_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM task_events WHERE task_id = NEW.id AND version = NEW.version) THEN
        RAISE EXCEPTION 'task % version % has no event', NEW.id, NEW.version
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER tasks_event_written AFTER INSERT OR UPDATE ON tasks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tasks_event_written();

