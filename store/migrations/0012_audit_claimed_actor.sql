-- Who did it, as the system knows it (actor: the OS user of the CLI, later the signed-in staff
-- member), and who the user said they were (claimed_actor: HOTLINE_ACTOR). Before this, the
-- claim was written as the actor: anyone could read residents' data under anyone's name.
ALTER TABLE audit_log ADD COLUMN claimed_actor text CHECK (claimed_actor <> '');
