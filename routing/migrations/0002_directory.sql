-- The directory: who the residents are, who their doctors are, and who is on night duty.
-- Personal numbers are never stored in clear: *_enc is AES-GCM ciphertext, *_hash the keyed
-- lookup hash (store/pii.py), *_masked what a screen may show without decrypting.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE districts (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name <> '')
);

-- 社区卫生服务中心
CREATE TABLE centers (
    id          serial PRIMARY KEY,
    district_id integer NOT NULL REFERENCES districts,
    name        text NOT NULL CHECK (name <> ''),
    UNIQUE (district_id, name)
);

CREATE TABLE teams (
    id          serial PRIMARY KEY,
    center_id   integer NOT NULL REFERENCES centers,
    name        text NOT NULL CHECK (name <> ''),
    UNIQUE (center_id, name)
);

CREATE TABLE staff (
    id            serial PRIMARY KEY,
    staff_no      text NOT NULL UNIQUE CHECK (staff_no <> ''),   -- 工号
    name          text NOT NULL CHECK (name <> ''),
    role          text NOT NULL CHECK (role IN (
                      'family_doctor', 'assistant', 'nurse', 'night_doctor', 'agent',
                      'supervisor', 'director', 'district_admin')),
    district_id   integer NOT NULL REFERENCES districts,
    center_id     integer REFERENCES centers,   -- NULL: works for the whole district
    team_id       integer REFERENCES teams,
    sip_uri       text,                         -- the softphone this person answers on
    mobile_enc    bytea,
    mobile_hash   bytea,
    mobile_masked text,
    left_on       date,                         -- set when the person leaves; rows stay for history
    CHECK (team_id IS NULL OR center_id IS NOT NULL),
    CHECK ((mobile_enc IS NULL) = (mobile_hash IS NULL))
);
CREATE INDEX staff_team ON staff (team_id) WHERE team_id IS NOT NULL;
CREATE INDEX staff_role ON staff (role, district_id);

-- 签约居民
CREATE TABLE residents (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL CHECK (name <> ''),
    id_number_enc    bytea NOT NULL,
    id_number_hash   bytea NOT NULL UNIQUE,
    id_number_masked text NOT NULL,
    sex              char(1) NOT NULL CHECK (sex IN ('M', 'F')),
    birth_date       date NOT NULL,
    center_id        integer NOT NULL REFERENCES centers,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX residents_center ON residents (center_id, id);

-- Several numbers per resident; one landline may serve a whole family, so a number may belong
-- to several residents (the lookup returns them in `position` order).
CREATE TABLE resident_phones (
    resident_id  bigint NOT NULL REFERENCES residents ON DELETE CASCADE,
    position     smallint NOT NULL CHECK (position >= 0),
    phone_hash   bytea NOT NULL,
    phone_enc    bytea NOT NULL,
    phone_masked text NOT NULL,
    PRIMARY KEY (resident_id, position),
    UNIQUE (resident_id, phone_hash)
);
CREATE INDEX resident_phones_lookup ON resident_phones (phone_hash);

-- 签约: the resident's own family doctor is the one on the contract in force that day.
CREATE TABLE contracts (
    id          bigserial PRIMARY KEY,
    resident_id bigint NOT NULL REFERENCES residents ON DELETE CASCADE,
    doctor_id   integer NOT NULL REFERENCES staff,
    team_id     integer REFERENCES teams,
    starts_on   date NOT NULL,
    ends_on     date NOT NULL,
    CHECK (ends_on >= starts_on),
    -- one contract in force at a time
    EXCLUDE USING gist (resident_id WITH =, daterange(starts_on, ends_on, '[]') WITH &&)
);
CREATE INDEX contracts_doctor ON contracts (doctor_id);

CREATE TABLE resident_conditions (
    resident_id bigint NOT NULL REFERENCES residents ON DELETE CASCADE,
    condition   text NOT NULL CHECK (condition <> ''),   -- 高血压, 糖尿病, …
    PRIMARY KEY (resident_id, condition)
);

-- A child's guardians (监护人), themselves residents.
CREATE TABLE guardians (
    child_id    bigint NOT NULL REFERENCES residents ON DELETE CASCADE,
    guardian_id bigint NOT NULL REFERENCES residents ON DELETE CASCADE,
    relation    text NOT NULL DEFAULT '',
    PRIMARY KEY (child_id, guardian_id),
    CHECK (child_id <> guardian_id)
);

-- 夜间值班: a shift owns the calls of its scope from starts_at until ends_at.
CREATE TABLE duty_shifts (
    id          bigserial PRIMARY KEY,
    doctor_id   integer NOT NULL REFERENCES staff,
    district_id integer NOT NULL REFERENCES districts,
    center_id   integer REFERENCES centers,   -- NULL: the whole district
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    CHECK (ends_at > starts_at),
    -- nobody is on two shifts at once
    EXCLUDE USING gist (doctor_id WITH =, tstzrange(starts_at, ends_at) WITH &&)
);
CREATE INDEX duty_shifts_when ON duty_shifts USING gist (tstzrange(starts_at, ends_at));
