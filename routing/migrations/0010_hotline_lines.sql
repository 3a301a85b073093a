-- Hotline numbers (专属分机号): each district, and a center if it wants, has its own number or
-- extension. The number dialled selects the chain for callers the directory does not know
-- (their district's desk, or the center's agents first) and the greeting they hear.
CREATE TABLE hotline_lines (
    number      text PRIMARY KEY CHECK (number ~ '^[0-9A-Za-z_.+-]{1,32}$'),  -- the dialled user part
    district_id integer NOT NULL REFERENCES districts,
    center_id   integer REFERENCES centers,            -- NULL: the whole district
    label       text NOT NULL DEFAULT '',
    greeting    text                                  -- a prompt file of the line's own; NULL: default
);

CREATE TRIGGER routing_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hotline_lines
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changed();
