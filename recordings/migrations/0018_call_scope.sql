-- Where each call belongs, written when the call is routed, so the console's scope filter
-- (routing/scope.py) and its search filters are plain indexed columns instead of joins through
-- contracts that may have changed since: the number dialled, the district, center and team the
-- call was for (the caller's own, or the line's for an unknown caller), and who answered it.
ALTER TABLE call_records
    ADD COLUMN line        text,
    ADD COLUMN district_id integer REFERENCES districts,
    ADD COLUMN center_id   integer REFERENCES centers,
    ADD COLUMN team_id     integer REFERENCES teams,
    ADD COLUMN answered_by integer REFERENCES staff;

-- The calls already written: the resident's center and the contract in force that day, or the
-- district when there is only one.
UPDATE call_records c
   SET center_id = r.center_id, district_id = ce.district_id
  FROM residents r JOIN centers ce ON ce.id = r.center_id
 WHERE r.id = c.resident_id;
UPDATE call_records c
   SET team_id = k.team_id
  FROM contracts k
 WHERE k.resident_id = c.resident_id
   AND (c.offered_at AT TIME ZONE 'Asia/Shanghai')::date BETWEEN k.starts_on AND k.ends_on;
UPDATE call_records SET district_id = (SELECT min(id) FROM districts)
 WHERE district_id IS NULL AND (SELECT count(*) FROM districts) = 1;
UPDATE call_records c
   SET answered_by = a.staff_id
  FROM dial_attempts a
 WHERE a.call_record_id = c.id AND a.outcome = 'answered';

-- The call list: newest first within a scope, keyset-paginated on (offered_at, id).
CREATE INDEX call_records_newest ON call_records (district_id, offered_at DESC, id DESC);
CREATE INDEX call_records_center_newest ON call_records (center_id, offered_at DESC, id DESC);
CREATE INDEX call_records_team_newest ON call_records (team_id, offered_at DESC, id DESC);
CREATE INDEX call_records_answered_by ON call_records (answered_by, offered_at DESC, id DESC)
    WHERE answered_by IS NOT NULL;
CREATE INDEX call_records_resident_newest ON call_records (resident_id, offered_at DESC, id DESC)
    WHERE resident_id IS NOT NULL;
CREATE INDEX call_records_caller_hash ON call_records (caller_number_hash, offered_at DESC);
CREATE INDEX dial_attempts_staff ON dial_attempts (staff_id, started_at DESC);
