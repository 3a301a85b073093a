-- A district's own recording of one of the hotline's prompts (greeting, menu, …), set in the
-- console's admin pages; without a row the prompt shipped in ivr/prompts/ plays. The audio is
-- kept here, not in a node's DATA_DIR, because service nodes and a console host share only
-- PostgreSQL and Redis. Stored as calls play it: 8 kHz mono 16-bit WAV (ivr/prompt_store.py).
CREATE TABLE prompt_overrides (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9_]{1,32}$'),
    wav         bytea NOT NULL CHECK (octet_length(wav) BETWEEN 44 AND 5000000),
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    source_name text NOT NULL DEFAULT '',   -- the uploaded file's name, as the operator had it
    set_by      text NOT NULL,
    set_at      timestamptz NOT NULL DEFAULT now()
);

-- Nodes that play prompts reload them when this changes.
CREATE FUNCTION notify_prompts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hotline_prompts', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER prompts_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON prompt_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION notify_prompts_changed();
