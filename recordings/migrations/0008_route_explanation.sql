-- The whole route explanation of a call (issue 4): every step of the fallback chain with its
-- reason, who was rung and who was skipped and why, as `hotline route --json` shows it.
-- route_targets keeps the flat list of people in ringing order.
ALTER TABLE call_records ADD COLUMN route_explanation jsonb NOT NULL DEFAULT '{}';
