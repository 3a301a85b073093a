-- The console's audit search (store/audit.py search_audit) pages newest first on id, filtered by
-- actor, subject or action: an index per filter ordered by id lets each page be a short index
-- scan from the cursor instead of a sort of everything the actor or subject ever did.
CREATE INDEX audit_log_actor_id ON audit_log (actor, id DESC);
CREATE INDEX audit_log_subject_id ON audit_log (subject, id DESC);
CREATE INDEX audit_log_action_id ON audit_log (action, id DESC);
-- A date range alone: the rows of the range by time (ids grow with time, but a clock step or a
-- long transaction may write them out of order, so the range is on `at` itself).
CREATE INDEX audit_log_at ON audit_log (at);
