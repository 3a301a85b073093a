-- The night handover (issue 11): the duty doctor's note on each call she answered at night, and
-- the sheet built per team at the end of the night whose items become 'handover' tasks for the
-- day doctors (handover/night_handover.py). Notes, sheets and items are kept: never updated
-- (notes) nor deleted (any of them) — the acknowledgement of an item is its task's close event.

-- One note per answered call, by the doctor who answered it.
CREATE TABLE night_handover_notes (
    id               bigserial PRIMARY KEY,
    call_record_id   bigint NOT NULL UNIQUE REFERENCES call_records,
    resident_id      bigint REFERENCES residents,     -- the caller, when known
    author_staff_id  integer NOT NULL REFERENCES staff,
    written_at       timestamptz NOT NULL,
    summary          text NOT NULL CHECK (length(summary) BETWEEN 1 AND 2000),
    follow_up        boolean NOT NULL,                -- the day team must follow up
    urgency          text NOT NULL CHECK (urgency IN ('normal', 'urgent'))
);
-- the caller card's "notes of the night about this resident"
CREATE INDEX night_handover_notes_resident ON night_handover_notes (resident_id, written_at DESC)
    WHERE resident_id IS NOT NULL;

-- One sheet per district, night (the local date the night began) and team; team NULL holds the
-- callers no team has (unknown numbers).
CREATE TABLE handover_sheets (
    id           bigserial PRIMARY KEY,
    district_id  integer NOT NULL REFERENCES districts,
    night        date NOT NULL,
    team_id      integer REFERENCES teams,
    center_id    integer REFERENCES centers,          -- the team's (NULL with the team)
    built_at     timestamptz NOT NULL                 -- first built; later builds only add items
);
CREATE UNIQUE INDEX handover_sheets_one ON handover_sheets (district_id, night, coalesce(team_id, 0));
CREATE INDEX handover_sheets_team ON handover_sheets (team_id, night DESC);
CREATE INDEX handover_sheets_center ON handover_sheets (center_id, night DESC);
CREATE INDEX handover_sheets_district ON handover_sheets (district_id, night DESC);

-- What the night leaves for the day. `source_key` names what the item is about ('note:<id>',
-- 'missed:<call id>', 'callback:<task id>:<night>'): building a sheet twice adds nothing.
CREATE TABLE handover_items (
    id                bigserial PRIMARY KEY,
    sheet_id          bigint NOT NULL REFERENCES handover_sheets,
    source            text NOT NULL CHECK (source IN ('note', 'missed_call', 'callback')),
    source_key        text NOT NULL UNIQUE,
    shift_id          bigint REFERENCES duty_shifts,   -- the shift whose end built it
    resident_id       bigint REFERENCES residents,
    caller_masked     text NOT NULL DEFAULT '',
    call_record_id    bigint REFERENCES call_records,
    note_id           bigint REFERENCES night_handover_notes,
    callback_task_id  bigint REFERENCES tasks,
    voicemails        integer NOT NULL DEFAULT 0 CHECK (voicemails >= 0),
    summary           text NOT NULL DEFAULT '' CHECK (length(summary) <= 2000),
    urgency           text NOT NULL CHECK (urgency IN ('normal', 'urgent')),
    -- the day doctor's 'handover' task; NULL: on the sheet for information only (a callback the
    -- night already completed, or a caller with neither resident nor number to follow up)
    task_id           bigint UNIQUE REFERENCES tasks,
    created_at        timestamptz NOT NULL
);
CREATE INDEX handover_items_sheet ON handover_items (sheet_id, id);
CREATE INDEX handover_items_shift ON handover_items (shift_id) WHERE shift_id IS NOT NULL;

CREATE TRIGGER night_handover_notes_kept BEFORE UPDATE OR DELETE OR TRUNCATE ON night_handover_notes
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_never_deleted();
CREATE TRIGGER handover_sheets_kept BEFORE DELETE OR TRUNCATE ON handover_sheets
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_never_deleted();
CREATE TRIGGER handover_items_kept BEFORE DELETE OR TRUNCATE ON handover_items
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_never_deleted();
