-- Calls the service places (click-to-call, issue 11): the staff member's softphone is rung first,
-- then the resident of a task, and the two are bridged and recorded like any call. Their record
-- says so (direction 'outbound') and names the task it worked. task_id has no foreign key on
-- purpose: the task table is being reshaped (callback_tasks → tasks) and a record must never be
-- refused for it.
ALTER TABLE call_records
    ADD COLUMN direction text NOT NULL DEFAULT 'inbound' CHECK (direction IN ('inbound', 'outbound')),
    ADD COLUMN task_id   bigint;
CREATE INDEX call_records_task ON call_records (task_id, offered_at) WHERE task_id IS NOT NULL;

-- Requests to place such a call, from any process (the console, `hotline tasks call`), taken by
-- exactly one service node (FOR UPDATE SKIP LOCKED), kept across restarts.
--   pending    written by the requester; any node may claim it until pickup_by (then it is
--              closed 'failed': a doctor is never rung by a request she gave up on)
--   placing    claimed by claimed_by_node, which rings the staff member, then the resident, and
--              renews lease_until while it works
--   connected  the resident answered: the call is bridged (too late to cancel)
--   cancelled  asked to stop before the resident answered; the node hangs up both legs and
--              closes it (outcome 'cancelled'); a pending request is closed at once
--   done       finished, with its outcome
-- A request whose node stopped renewing its lease (the node died) is closed by any node —
-- 'answered' if it was connected, else 'failed' — and never placed again: the SIP legs died
-- with the node, and ringing a doctor again minutes later would surprise her.
CREATE TABLE click_to_call_requests (
    id               bigserial PRIMARY KEY,
    task_id          bigint NOT NULL,
    staff_id         integer NOT NULL REFERENCES staff,
    requested_by     text NOT NULL CHECK (requested_by <> '' AND length(requested_by) <= 200),
    requested_at     timestamptz NOT NULL,
    pickup_by        timestamptz NOT NULL,     -- database time: a node must claim it before then
    state            text NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'placing', 'connected', 'cancelled', 'done')),
    claimed_by_node  text,
    claimed_at       timestamptz,
    lease_until      timestamptz,              -- database time, renewed by the claiming node
    call_record_id   bigint REFERENCES call_records,
    outcome          text CHECK (outcome IN ('answered', 'no_answer', 'busy', 'unreachable',
                         'staff_no_answer', 'staff_busy', 'staff_unreachable', 'cancelled', 'failed')),
    reason           text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    cancelled_at     timestamptz,
    cancelled_by     text,
    ended_at         timestamptz,
    CHECK ((outcome IS NULL) = (ended_at IS NULL)),
    CHECK (outcome IS NULL OR state IN ('done', 'cancelled')),
    CHECK (state NOT IN ('placing', 'connected') OR claimed_by_node IS NOT NULL),
    CHECK (outcome <> 'answered' OR call_record_id IS NOT NULL)
);
CREATE INDEX click_to_call_pending ON click_to_call_requests (id) WHERE state = 'pending';
CREATE INDEX click_to_call_working ON click_to_call_requests (claimed_by_node, lease_until)
    WHERE ended_at IS NULL AND state <> 'pending';
CREATE INDEX click_to_call_task ON click_to_call_requests (task_id, requested_at);

-- Every node LISTENs: a new request is claimed at once, a cancel reaches the node placing it,
-- and a waiting requester learns the outcome. The payload is '<id> <state>'.
CREATE FUNCTION click_to_call_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state OR NEW.outcome IS DISTINCT FROM OLD.outcome THEN
        PERFORM pg_notify('click_to_call', NEW.id || ' ' || NEW.state);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER click_to_call_notify AFTER INSERT OR UPDATE ON click_to_call_requests
    FOR EACH ROW EXECUTE FUNCTION click_to_call_notify();
