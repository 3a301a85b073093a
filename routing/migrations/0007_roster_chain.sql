-- The duty roster as a district runs it (issue 4): several duty doctors per shift, rung in
-- order or together, backup doctors, swaps; leave; and a change signal for routing caches.

-- 'duty' rings first for the center; 'backup' after every duty doctor. A district-wide shift
-- (center_id NULL) is the district's backup. Equal ring_position within a center and kind ring
-- together (ring-all); lower positions ring first.
ALTER TABLE duty_shifts
    ADD COLUMN kind text NOT NULL DEFAULT 'duty' CHECK (kind IN ('duty', 'backup')),
    ADD COLUMN ring_position smallint NOT NULL DEFAULT 1 CHECK (ring_position BETWEEN 1 AND 9),
    -- a swap keeps who was rostered first (the roster as published vs. as worked)
    ADD COLUMN swapped_from integer REFERENCES staff,
    ADD COLUMN note text NOT NULL DEFAULT '';

-- Leave (休假, 进修, 病假): the person is skipped by routing on these dates, with the reason.
CREATE TABLE staff_leaves (
    id        bigserial PRIMARY KEY,
    staff_id  integer NOT NULL REFERENCES staff,
    starts_on date NOT NULL,
    ends_on   date NOT NULL,
    reason    text NOT NULL DEFAULT '',
    CHECK (ends_on >= starts_on),
    EXCLUDE USING gist (staff_id WITH =, daterange(starts_on, ends_on, '[]') WITH &&)
);

-- Routing caches reload when these change (notify_routing_changed: migration 0006).
CREATE TRIGGER routing_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON staff
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changed();
CREATE TRIGGER routing_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON teams
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changed();
CREATE TRIGGER routing_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON centers
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changed();
CREATE TRIGGER routing_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON duty_shifts
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changed();
CREATE TRIGGER routing_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON staff_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changed();
