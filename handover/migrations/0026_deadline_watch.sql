-- Deadlines watched and ownership following the shift (issue 11; handover/watcher.py,
-- handover/ownership.py).

-- The team lead a breach is escalated to. The directory had none: it defaults to the team's
-- first family doctor still working (lowest id); escalation falls back to that rule too when a
-- team created later has no lead set.
ALTER TABLE teams ADD COLUMN lead_staff_id integer REFERENCES staff;
UPDATE teams t SET lead_staff_id = (
    SELECT s.id FROM staff s
     WHERE s.team_id = t.id AND s.role = 'family_doctor' AND s.left_on IS NULL
     ORDER BY s.id LIMIT 1);

-- Who an overdue task was escalated to (the owner's team lead, the center's directors), one
-- row per person: their desk lists these. Written with the 'escalated' event, never changed.
CREATE TABLE task_escalations (
    task_id   bigint NOT NULL REFERENCES tasks,
    staff_id  integer NOT NULL REFERENCES staff,
    role      text NOT NULL CHECK (role IN ('team_lead', 'director')),
    at        timestamptz NOT NULL,
    PRIMARY KEY (task_id, staff_id)
);
CREATE INDEX task_escalations_staff ON task_escalations (staff_id, task_id);
CREATE TRIGGER task_escalations_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON task_escalations
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_never_deleted();

-- What the acting watcher last applied of the ownership rule (per center: day or night and the
-- night's owner; the staff away): written in the transaction that moves the tasks, so a watcher
-- taking over acts on what changed since, not on every task again (which would also undo a
-- supervisor's reassignment by hand between two shift changes).
CREATE TABLE task_watch_state (
    id          smallint PRIMARY KEY CHECK (id = 1),
    state       jsonb NOT NULL,
    applied_at  timestamptz NOT NULL
);

-- The sweep's two questions over open tasks read only the tasks still to warn or to breach
-- (a million open tasks, most warned and breached long ago, would otherwise be walked).
CREATE INDEX tasks_to_warn ON tasks (due_at) WHERE status = 'open' AND warned_at IS NULL;
CREATE INDEX tasks_to_breach ON tasks (due_at) WHERE status = 'open' AND overdue_at IS NULL;
-- (empty but for a breach whose escalation failed: the next sweep finds it here, not by a scan)
CREATE INDEX tasks_to_escalate ON tasks (id)
    WHERE status = 'open' AND overdue_at IS NOT NULL AND escalated_at IS NULL;
-- (A center's shift change walks its residents' tasks by tasks_resident of migration 0024: no
-- index of its own, as every index is one more write for each task the shift change moves.)
