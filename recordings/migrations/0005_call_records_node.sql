-- Which service node handles a call. Several nodes share the database; at start-up a node
-- recovers only the calls it was handling when it died, never a live call of another node.
ALTER TABLE call_records ADD COLUMN node text NOT NULL DEFAULT '';
CREATE INDEX call_records_open_by_node ON call_records (node) WHERE ended_at IS NULL;
