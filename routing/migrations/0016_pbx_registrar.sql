-- The PBX (Kamailio, docker/kamailio/kamailio-production.cfg) keeps its accounts and its
-- registrations with the staff directory, in this database.
--
-- Accounts: one digest password per extension, set with `hotline staff sip-password BH0001` and
-- `hotline sip-password hotline` (the service's own account). Only HA1 hashes are stored, never
-- the password: ha1 = MD5(username:realm:password), ha1b = MD5(username@realm:realm:password)
-- (for phones that send user@domain as their digest user name). Kamailio's auth_db reads the
-- view sip_subscribers (calculate_ha1 0, password_column ha1), which leaves out anyone who has
-- left and any credential whose extension is no longer the person's: a changed sip_uri needs a
-- new password, since the hash contains the user name.
CREATE TABLE sip_credentials (
    username  varchar(64) PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.+-]{1,64}$'),
    domain    varchar(64) NOT NULL CHECK (domain <> ''),           -- the digest realm
    ha1       varchar(128) NOT NULL CHECK (ha1 ~ '^[0-9a-f]{32}$'),
    ha1b      varchar(128) NOT NULL CHECK (ha1b ~ '^[0-9a-f]{32}$'),
    staff_id  integer UNIQUE REFERENCES staff ON DELETE CASCADE,   -- NULL: the service's own account
    set_at    timestamptz NOT NULL DEFAULT now()
);

-- The SIP user part of a staff member's sip_uri ("sip:1001@pbx" → "1001").
CREATE FUNCTION sip_extension(uri text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT substring(uri FROM '^sips?:([^@;:]+)@')
$$;

CREATE VIEW sip_subscribers AS
SELECT c.username, c.domain, c.ha1, c.ha1b
FROM sip_credentials c LEFT JOIN staff s ON s.id = c.staff_id
WHERE c.staff_id IS NULL
   OR ((s.left_on IS NULL OR s.left_on > current_date) AND sip_extension(s.sip_uri) = c.username);

-- Kamailio checks the version of every table it uses in its `version` table at start-up
-- (Kamailio 5.6: subscriber 7, location 9); created here unless the database has it already.
CREATE TABLE IF NOT EXISTS version (
    id SERIAL PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);
INSERT INTO version (table_name, table_version) VALUES ('sip_subscribers', 7), ('location', 9)
    ON CONFLICT (table_name) DO UPDATE SET table_version = EXCLUDED.table_version;

-- Registrations: Kamailio's usrloc writes every binding here as it saves it (db_mode 1,
-- write-through); Kamailio 5.6's schema (/usr/share/kamailio/postgres/usrloc-create.sql), verbatim.
CREATE TABLE location (
    id SERIAL PRIMARY KEY NOT NULL,
    ruid VARCHAR(64) DEFAULT '' NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT NULL,
    contact VARCHAR(512) DEFAULT '' NOT NULL,
    received VARCHAR(128) DEFAULT NULL,
    path VARCHAR(512) DEFAULT NULL,
    expires TIMESTAMP WITHOUT TIME ZONE DEFAULT '2030-05-28 21:32:15' NOT NULL,
    q REAL DEFAULT 1.0 NOT NULL,
    callid VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    cseq INTEGER DEFAULT 1 NOT NULL,
    last_modified TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:01' NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    cflags INTEGER DEFAULT 0 NOT NULL,
    user_agent VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(64) DEFAULT NULL,
    methods INTEGER DEFAULT NULL,
    instance VARCHAR(255) DEFAULT NULL,
    reg_id INTEGER DEFAULT 0 NOT NULL,
    server_id INTEGER DEFAULT 0 NOT NULL,
    connection_id INTEGER DEFAULT 0 NOT NULL,
    keepalive INTEGER DEFAULT 0 NOT NULL,
    partition INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT location_ruid_idx UNIQUE (ruid)
);
CREATE INDEX location_account_contact_idx ON location (username, domain, contact);
CREATE INDEX location_expires_idx ON location (expires);
CREATE INDEX location_tcpcon_idx ON location (connection_id);
CREATE INDEX location_connection_idx ON location (server_id, connection_id);

-- A phone that (re-)registers is ringable again at once: every node LISTENs on this channel
-- (routing/registrations.py) and clears the "unreachable" mark of the staff with that extension.
-- Any PBX that writes its registrations here (or sends this NOTIFY itself) gets the same.
CREATE FUNCTION notify_sip_registration() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sip_registrations', NEW.username);
    RETURN NULL;
END
$$;
CREATE TRIGGER sip_registration AFTER INSERT OR UPDATE ON location
    FOR EACH ROW EXECUTE FUNCTION notify_sip_registration();
