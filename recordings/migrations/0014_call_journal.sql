-- Call events spooled to a node's local journal while PostgreSQL was away (recordings/journal.py,
-- recordings/call_log.py) are applied exactly once: each event's id is inserted here in the same
-- transaction as its effect, so a replay cut short (a crash, PostgreSQL lost again) and started
-- over skips what was committed. A segment's rows are deleted once its file is gone.
CREATE TABLE call_journal_applied (
    event_id    uuid PRIMARY KEY,
    segment     text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX call_journal_applied_segment ON call_journal_applied (segment);
