-- 履约 (handover/promise_reports.py) reads the tasks whose deadline falls in a range, whatever
-- their status: the indexes on due_at so far cover the open tasks only (the watcher's), and the
-- closed tasks are most of the table after a few months. Without this a month's report reads
-- every task ever opened.
CREATE INDEX tasks_due_any ON tasks (due_at);
