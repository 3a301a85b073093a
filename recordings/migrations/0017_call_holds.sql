-- Every hold and resume during a conversation (issue 8: the recording notes the hold): which
-- side put the other on hold (re-INVITE or UPDATE with sendonly/inactive), when, and where in
-- the recording, so a supervisor listening knows why one side went silent.
-- Each element: {"at": ISO 8601, "side": "caller"|"staff", "on": true|false, "offset_s": n}.
ALTER TABLE call_records ADD COLUMN holds jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(holds) = 'array');
