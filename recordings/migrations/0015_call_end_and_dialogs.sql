-- Why a call ended when the parties did not end it themselves (issue 9 §3), beside the
-- disposition, which keeps its vocabulary: 'media timeout' (no RTP from a leg for
-- HOTLINE_RTP_TIMEOUT_S), 'max call length' (HOTLINE_MAX_CALL_S), 'recovered' (closed at start-up
-- after the node died). NULL: the caller or the staff member hung up, or the flow ended it.
ALTER TABLE call_records ADD COLUMN end_reason text
    CHECK (end_reason IN ('media timeout', 'max call length', 'recovered'));
-- Set when recovery could not close the record normally (its recording, its callback, …) and
-- closed it with what was known: what went wrong, for an operator.
ALTER TABLE call_records ADD COLUMN recovery_note text;
-- The SIP dialog of every leg of the call as it was established (telephony.dialog_state
-- DialogState.to_json: Call-ID, tags, route set, remote target, CSeq, URIs, side), so a node
-- restarted after a crash can send BYE to the phones of every call it lost.
ALTER TABLE call_records ADD COLUMN dialogs jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(dialogs) = 'array');
