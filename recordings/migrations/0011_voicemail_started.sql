-- Where the caller's message starts within the call's stereo recording: seconds from the start
-- of the file, on the caller's (left) channel, written when the beep has played. The recording
-- reaches the disk as the call goes, so a message cut by a crash is still there: recovery cuts
-- it from this point to the end (ivr/flow.py CallFlow.recover). NULL: no message was left (the
-- caller never reached the beep, or said nothing after it).
ALTER TABLE call_records ADD COLUMN voicemail_offset_s double precision CHECK (voicemail_offset_s >= 0);
