-- The keys the caller pressed (issue 10: the call detail's timeline shows "key pressed"), in
-- order, as the flow collected them: {"at": ISO 8601, "key": "1", "menu": "menu"|"queue"}.
-- Only keys that choose something: the digits of a voicemail (until #) are not kept.
ALTER TABLE call_records ADD COLUMN keys jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(keys) = 'array');

-- The console's call search (recordings/call_search.py): each filter walks an index newest
-- first, (offered_at, id) being the keyset order.
CREATE INDEX call_records_line_newest ON call_records (line, offered_at DESC, id DESC)
    WHERE line IS NOT NULL;
CREATE INDEX call_records_disposition_newest ON call_records (disposition, offered_at DESC, id DESC);
CREATE INDEX call_records_offered ON call_records (offered_at DESC, id DESC);
-- A resident by name, exact or by prefix: a range on the bytes (C order), usable by a generic
-- plan, unlike LIKE with a parameter.
CREATE INDEX residents_name_prefix ON residents (name text_pattern_ops);
