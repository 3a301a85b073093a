-- The working-day calendar (issue 4): the State Council's public-holiday notices, local
-- closures, and centers' own day windows. routing/calendar.py judges day and night by them.

-- One row per special day of a notice: 'holiday' is a day off (including the weekend days inside
-- a holiday block), 'workday' a Saturday or Sunday that is a working day (调休上班). Ordinary
-- weekends and weekdays are implied. A year with no rows has no calendar: routing treats it as an
-- ordinary week and says so. `hotline calendar import` replaces a whole year.
CREATE TABLE calendar_days (
    on_date date PRIMARY KEY,
    kind    text NOT NULL CHECK (kind IN ('holiday', 'workday')),
    name    text NOT NULL CHECK (name <> ''),        -- 国庆节, 国庆节调休上班, …
    source  text NOT NULL DEFAULT '',                -- 国办发明电〔2025〕7号, or the file imported
    CHECK (kind = 'holiday' OR extract(isodow FROM on_date) IN (6, 7))
);

-- A district or one center closed on a date (培训, 停电, …): night service all day there.
CREATE TABLE calendar_closures (
    id          serial PRIMARY KEY,
    on_date     date NOT NULL,
    district_id integer REFERENCES districts ON DELETE CASCADE,  -- the whole district, or
    center_id   integer REFERENCES centers ON DELETE CASCADE,    -- one center
    reason      text NOT NULL CHECK (reason <> ''),
    created_by  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(district_id, center_id) = 1)
);
CREATE UNIQUE INDEX calendar_closures_district ON calendar_closures (district_id, on_date)
    WHERE district_id IS NOT NULL;
CREATE UNIQUE INDEX calendar_closures_center ON calendar_closures (center_id, on_date)
    WHERE center_id IS NOT NULL;
CREATE INDEX calendar_closures_date ON calendar_closures (on_date);

-- A center's own day window (e.g. 07:30–17:30) instead of the configured default.
CREATE TABLE center_day_windows (
    center_id integer PRIMARY KEY REFERENCES centers ON DELETE CASCADE,
    day_start time NOT NULL,
    day_end   time NOT NULL,
    set_by    text NOT NULL DEFAULT '',
    set_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (day_start < day_end)
);

-- Routing caches on every service node reload when the data they hold change: one NOTIFY on
-- the channel of routing/snapshot.py per statement (an import of a year is one reload, not
-- one per day). Later migrations hang their tables on the same function.
CREATE FUNCTION notify_routing_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hotline_routing', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER calendar_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON calendar_days
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changed();
CREATE TRIGGER calendar_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON calendar_closures
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changed();
CREATE TRIGGER calendar_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON center_day_windows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changed();

-- The published calendars, exactly as routing/data/calendar/YYYY.csv (tests/test_calendar.py
-- keeps the two identical). Later years arrive with `hotline calendar import`.
-- 2025: 国务院办公厅关于2025年部分节假日安排的通知（国办发明电〔2024〕12号）; routing/data/calendar/2025.csv
INSERT INTO calendar_days (on_date, kind, name, source) VALUES
    ('2025-01-01', 'holiday', '元旦', '国办发明电〔2024〕12号'),
    ('2025-01-26', 'workday', '春节调休上班', '国办发明电〔2024〕12号'),
    ('2025-01-28', 'holiday', '春节', '国办发明电〔2024〕12号'),
    ('2025-01-29', 'holiday', '春节', '国办发明电〔2024〕12号'),
    ('2025-01-30', 'holiday', '春节', '国办发明电〔2024〕12号'),
    ('2025-01-31', 'holiday', '春节', '国办发明电〔2024〕12号'),
    ('2025-02-01', 'holiday', '春节', '国办发明电〔2024〕12号'),
    ('2025-02-02', 'holiday', '春节', '国办发明电〔2024〕12号'),
    ('2025-02-03', 'holiday', '春节', '国办发明电〔2024〕12号'),
    ('2025-02-04', 'holiday', '春节', '国办发明电〔2024〕12号'),
    ('2025-02-08', 'workday', '春节调休上班', '国办发明电〔2024〕12号'),
    ('2025-04-04', 'holiday', '清明节', '国办发明电〔2024〕12号'),
    ('2025-04-05', 'holiday', '清明节', '国办发明电〔2024〕12号'),
    ('2025-04-06', 'holiday', '清明节', '国办发明电〔2024〕12号'),
    ('2025-04-27', 'workday', '劳动节调休上班', '国办发明电〔2024〕12号'),
    ('2025-05-01', 'holiday', '劳动节', '国办发明电〔2024〕12号'),
    ('2025-05-02', 'holiday', '劳动节', '国办发明电〔2024〕12号'),
    ('2025-05-03', 'holiday', '劳动节', '国办发明电〔2024〕12号'),
    ('2025-05-04', 'holiday', '劳动节', '国办发明电〔2024〕12号'),
    ('2025-05-05', 'holiday', '劳动节', '国办发明电〔2024〕12号'),
    ('2025-05-31', 'holiday', '端午节', '国办发明电〔2024〕12号'),
    ('2025-06-01', 'holiday', '端午节', '国办发明电〔2024〕12号'),
    ('2025-06-02', 'holiday', '端午节', '国办发明电〔2024〕12号'),
    ('2025-09-28', 'workday', '国庆节、中秋节调休上班', '国办发明电〔2024〕12号'),
    ('2025-10-01', 'holiday', '国庆节、中秋节', '国办发明电〔2024〕12号'),
    ('2025-10-02', 'holiday', '国庆节、中秋节', '国办发明电〔2024〕12号'),
    ('2025-10-03', 'holiday', '国庆节、中秋节', '国办发明电〔2024〕12号'),
    ('2025-10-04', 'holiday', '国庆节、中秋节', '国办发明电〔2024〕12号'),
    ('2025-10-05', 'holiday', '国庆节、中秋节', '国办发明电〔2024〕12号'),
    ('2025-10-06', 'holiday', '国庆节、中秋节', '国办发明电〔2024〕12号'),
    ('2025-10-07', 'holiday', '国庆节、中秋节', '国办发明电〔2024〕12号'),
    ('2025-10-08', 'holiday', '国庆节、中秋节', '国办发明电〔2024〕12号'),
    ('2025-10-11', 'workday', '国庆节、中秋节调休上班', '国办发明电〔2024〕12号');

-- 2026: 国务院办公厅关于2026年部分节假日安排的通知（国办发明电〔2025〕7号）; routing/data/calendar/2026.csv
INSERT INTO calendar_days (on_date, kind, name, source) VALUES
    ('2026-01-01', 'holiday', '元旦', '国办发明电〔2025〕7号'),
    ('2026-01-02', 'holiday', '元旦', '国办发明电〔2025〕7号'),
    ('2026-01-03', 'holiday', '元旦', '国办发明电〔2025〕7号'),
    ('2026-01-04', 'workday', '元旦调休上班', '国办发明电〔2025〕7号'),
    ('2026-02-14', 'workday', '春节调休上班', '国办发明电〔2025〕7号'),
    ('2026-02-15', 'holiday', '春节', '国办发明电〔2025〕7号'),
    ('2026-02-16', 'holiday', '春节', '国办发明电〔2025〕7号'),
    ('2026-02-17', 'holiday', '春节', '国办发明电〔2025〕7号'),
    ('2026-02-18', 'holiday', '春节', '国办发明电〔2025〕7号'),
    ('2026-02-19', 'holiday', '春节', '国办发明电〔2025〕7号'),
    ('2026-02-20', 'holiday', '春节', '国办发明电〔2025〕7号'),
    ('2026-02-21', 'holiday', '春节', '国办发明电〔2025〕7号'),
    ('2026-02-22', 'holiday', '春节', '国办发明电〔2025〕7号'),
    ('2026-02-23', 'holiday', '春节', '国办发明电〔2025〕7号'),
    ('2026-02-28', 'workday', '春节调休上班', '国办发明电〔2025〕7号'),
    ('2026-04-04', 'holiday', '清明节', '国办发明电〔2025〕7号'),
    ('2026-04-05', 'holiday', '清明节', '国办发明电〔2025〕7号'),
    ('2026-04-06', 'holiday', '清明节', '国办发明电〔2025〕7号'),
    ('2026-05-01', 'holiday', '劳动节', '国办发明电〔2025〕7号'),
    ('2026-05-02', 'holiday', '劳动节', '国办发明电〔2025〕7号'),
    ('2026-05-03', 'holiday', '劳动节', '国办发明电〔2025〕7号'),
    ('2026-05-04', 'holiday', '劳动节', '国办发明电〔2025〕7号'),
    ('2026-05-05', 'holiday', '劳动节', '国办发明电〔2025〕7号'),
    ('2026-05-09', 'workday', '劳动节调休上班', '国办发明电〔2025〕7号'),
    ('2026-06-19', 'holiday', '端午节', '国办发明电〔2025〕7号'),
    ('2026-06-20', 'holiday', '端午节', '国办发明电〔2025〕7号'),
    ('2026-06-21', 'holiday', '端午节', '国办发明电〔2025〕7号'),
    ('2026-09-20', 'workday', '国庆节调休上班', '国办发明电〔2025〕7号'),
    ('2026-09-25', 'holiday', '中秋节', '国办发明电〔2025〕7号'),
    ('2026-09-26', 'holiday', '中秋节', '国办发明电〔2025〕7号'),
    ('2026-09-27', 'holiday', '中秋节', '国办发明电〔2025〕7号'),
    ('2026-10-01', 'holiday', '国庆节', '国办发明电〔2025〕7号'),
    ('2026-10-02', 'holiday', '国庆节', '国办发明电〔2025〕7号'),
    ('2026-10-03', 'holiday', '国庆节', '国办发明电〔2025〕7号'),
    ('2026-10-04', 'holiday', '国庆节', '国办发明电〔2025〕7号'),
    ('2026-10-05', 'holiday', '国庆节', '国办发明电〔2025〕7号'),
    ('2026-10-06', 'holiday', '国庆节', '国办发明电〔2025〕7号'),
    ('2026-10-07', 'holiday', '国庆节', '国办发明电〔2025〕7号'),
    ('2026-10-10', 'workday', '国庆节调休上班', '国办发明电〔2025〕7号');
