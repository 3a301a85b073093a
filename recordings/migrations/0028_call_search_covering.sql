-- The console's call search at a million calls (recordings/call_search.py), issue 10's misses.
--
-- The calls a person answered, newest first (routing/scope.py: the "calls she took" arm, an
-- agent's whole scope) carry the columns the call list filters on. A desk agent has answered
-- tens of thousands of calls; asked for hers of a center, line or disposition that holds none of
-- them, the walk read every one of her calls from the table (0.1–1.2 s). Now the filter is tested
-- in the index (an index-only scan) and the table is read only for the rows shown.
DROP INDEX call_records_answered_by;
CREATE INDEX call_records_answered_by ON call_records (answered_by, offered_at DESC, id DESC)
    INCLUDE (center_id, team_id, line, disposition) WHERE answered_by IS NOT NULL;

-- The calls a person was rung for (the staff filter) are found by walking her dial attempts newest
-- first and testing each one's call against the viewer's scope and the other filters, or, when
-- few of hers are in scope, testing all her attempts' calls at once by id. Both read, per call,
-- only what the scope and the filters compare: from these two indexes alone, not from the tables
-- (a call record is ~2 kB with its route explanation; an attempt is read only for its call).
CREATE INDEX call_records_scope_by_id ON call_records (id)
    INCLUDE (offered_at, district_id, center_id, team_id, answered_by, disposition, line, resident_id);
DROP INDEX dial_attempts_staff;
CREATE INDEX dial_attempts_staff ON dial_attempts (staff_id, started_at DESC) INCLUDE (call_record_id);
