-- Referrals (转诊, issue 11): a doctor records that a resident was referred to a hospital; the
-- referral opens a referral_followup task (due +72 h) in the same transaction, so a referral
-- without its follow-up cannot exist. Referrals are a record of what was done: never deleted,
-- never edited (a mistaken one is followed up and closed with the outcome "other").

CREATE TABLE referrals (
    id                bigserial PRIMARY KEY,
    resident_id       bigint NOT NULL REFERENCES residents,
    hospital          text NOT NULL CHECK (hospital <> '' AND length(hospital) <= 200),
    department        text NOT NULL CHECK (department <> '' AND length(department) <= 100),
    reason            text NOT NULL CHECK (reason <> '' AND length(reason) <= 2000),
    referred_at       timestamptz NOT NULL,
    recorded_by       integer NOT NULL REFERENCES staff,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    followup_task_id  bigint NOT NULL UNIQUE REFERENCES tasks
);
CREATE INDEX referrals_resident ON referrals (resident_id, referred_at DESC);
CREATE INDEX referrals_recorded_by ON referrals (recorded_by, referred_at DESC);
CREATE INDEX referrals_referred_at ON referrals (referred_at DESC, id DESC);

CREATE TRIGGER referrals_never_changed BEFORE UPDATE OR DELETE OR TRUNCATE ON referrals
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_never_deleted();
