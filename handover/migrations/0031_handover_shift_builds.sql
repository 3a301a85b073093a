-- The night handover built by the deadline watcher (issue 11): one row per duty shift whose sheet
-- the watcher built after the shift ended, so a sweep asks "which ended shifts are not built yet"
-- of this table instead of building every recent shift again (a build is idempotent, but each one
-- reads the night's calls and notes). An operator's `hotline handover build` writes nothing here:
-- the watcher's build after it adds nothing new.
CREATE TABLE handover_shift_builds (
    -- a roster edit may renumber or remove a shift: its build row follows it
    shift_id      bigint PRIMARY KEY REFERENCES duty_shifts ON UPDATE CASCADE ON DELETE CASCADE,
    built_at      timestamptz NOT NULL,
    items_added   integer NOT NULL CHECK (items_added >= 0),
    tasks_opened  integer NOT NULL CHECK (tasks_opened >= 0)
);
-- the sweep's question walks the shifts that ended lately, by their end
CREATE INDEX duty_shifts_ends ON duty_shifts (ends_at);
