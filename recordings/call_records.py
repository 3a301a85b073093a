"""Call records (CDR): one row per call that reaches the service, written as the call goes.

The row is inserted when the INVITE arrives, before anything else happens, so every call leaves
a record whatever becomes of the process; each later step updates it. The calling number is PII:
it is stored encrypted with its lookup hash and mask, like the directory's numbers.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from routing.numbers import DEFAULT_AREA_CODE, InvalidNumber, normalize_phone
from routing.records import PHONE, seal_phone
from store.pii import PiiVault, mask_phone

DISPOSITIONS = ("connected", "missed", "abandoned", "ivr_only", "failed")
DIAL_OUTCOMES = ("answered", "busy", "no_answer", "rejected", "unreachable", "cancelled")
# Why a call ended when its parties did not end it (NULL otherwise); see migration 0012.
END_REASONS = ("media timeout", "max call length", "recovered")
# The PII vault's kind for a stored SIP dialog.
DIALOG_KIND = "sip_dialog"
# The record's own times: a closing time never precedes any of them (a restarted node's clock may
# lag what the previous run wrote, e.g. the same HOTLINE_CLOCK_START).
_CLOSING_TIME = """SELECT GREATEST($2::timestamptz, r.offered_at, r.answered_at, r.connected_at,
    (SELECT max(GREATEST(a.started_at, a.ended_at)) FROM dial_attempts a WHERE a.call_record_id = r.id))
    FROM call_records r WHERE r.id = $1"""


@dataclass(frozen=True)
class CallerNumber:
    """A calling number as stored: hash, ciphertext and mask; hash None when withheld/invalid."""

    masked: str
    hash: bytes | None = None
    encrypted: bytes | None = None

    @classmethod
    def of(cls, vault: PiiVault, raw: str, *, area_code: str = DEFAULT_AREA_CODE) -> CallerNumber:
        try:
            number = normalize_phone(raw, area_code)
        except InvalidNumber:
            # anonymous, an extension, a SIP name: kept masked for the record, not callable back
            return cls(mask_phone(raw.strip())[:32])
        number_hash, encrypted, masked = seal_phone(vault, PHONE, number)
        return cls(masked, number_hash, encrypted)


@dataclass(frozen=True)
class CallPlace:
    """Where a call belongs, for the console's scope and filters (migration 0018): the number
    dialled, and the district, center and team the call was for (the caller's own, or the
    line's for an unknown caller)."""

    line: str | None = None
    district_id: int | None = None
    center_id: int | None = None
    team_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "district_id": self.district_id, "center_id": self.center_id,
                "team_id": self.team_id}


@dataclass(frozen=True)
class UnfinishedCall:
    record_id: int
    call_id: str
    resident_id: int | None
    number_hash: bytes | None
    number_encrypted: bytes | None
    number_masked: str
    offered_at: datetime
    connected: bool  # a human answered
    # routed and not connected: the caller was waiting for a human when the service died
    # (ringing, in the queue, or at the voicemail), as the live flow's waiting_for_human
    routed: bool
    recording_to_repair: str | None
    route_targets: list[dict[str, Any]]
    # Where the caller's message starts in the recording (seconds), when they were leaving one.
    voicemail_offset_s: float | None
    # The SIP dialogs of the call's legs as established (DialogState.to_json), to hang them up.
    dialogs: list[dict[str, Any]] = field(default_factory=list)
    # Everyone rung for the call (dial attempts): their presence may still name this call.
    staff_ids: tuple[int, ...] = ()


class CallRecords:
    # `pool` may be a single connection too (the journal's replay runs in its transaction).
    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection, vault: PiiVault, node: str = ""):
        self._pool = pool
        self._vault = vault
        # The service node writing these records (see unfinished).
        self.node = node

    async def open(self, call_id: str, caller: CallerNumber, offered_at: datetime) -> int:
        """The record of a new call; the same record again for a retransmitted INVITE."""
        row = await self._pool.fetchrow(
            """INSERT INTO call_records (call_id, caller_number_hash, caller_number_enc,
                                         caller_number_masked, offered_at, node)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (call_id) DO UPDATE SET call_id = EXCLUDED.call_id
               RETURNING id""",
            call_id, caller.hash, caller.encrypted, caller.masked, offered_at, self.node,
        )
        return row["id"]

    async def open_outbound(self, call_id: str, called: CallerNumber, offered_at: datetime, *,
                            task_id: int, resident_id: int | None, place: CallPlace) -> int:
        """The record of a call the service places for a task (click-to-call), written before the
        staff member's phone rings. The number columns hold the number called (the resident's),
        so the call is found by it like the calls the resident made."""
        return await self._pool.fetchval(
            """INSERT INTO call_records (call_id, caller_number_hash, caller_number_enc,
                                         caller_number_masked, offered_at, node, direction, task_id,
                                         resident_id, line, district_id, center_id, team_id)
               VALUES ($1, $2, $3, $4, $5, $6, 'outbound', $7, $8, $9, $10, $11, $12)
               RETURNING id""",
            call_id, called.hash, called.encrypted, called.masked, offered_at, self.node, task_id,
            resident_id, place.line, place.district_id, place.center_id, place.team_id)

    async def outbound_connected(self, record_id: int, at: datetime, staff_id: int) -> None:
        """The resident answered the call a staff member placed: a human conversation from now,
        hers (the console's "calls she took")."""
        await self._pool.execute(
            "UPDATE call_records SET connected_at = $2, answered_by = $3 WHERE id = $1 AND connected_at IS NULL",
            record_id, at, staff_id)

    async def identified(self, record_id: int, resident_id: int) -> None:
        await self._pool.execute(
            "UPDATE call_records SET resident_id = $2 WHERE id = $1", record_id, resident_id)

    async def placed(self, record_id: int, place: CallPlace) -> None:
        await self._pool.execute(
            "UPDATE call_records SET line = $2, district_id = $3, center_id = $4, team_id = $5"
            " WHERE id = $1", record_id, place.line, place.district_id, place.center_id, place.team_id)

    async def key_pressed(self, record_id: int, note: dict[str, Any]) -> None:
        """A key the caller pressed at a menu (note: at, key, menu)."""
        await self._pool.execute(
            "UPDATE call_records SET keys = keys || jsonb_build_array($2::jsonb) WHERE id = $1",
            record_id, json.dumps(note))

    async def routed(self, record_id: int, service: str | None, reason: str,
                     targets: list[dict[str, Any]], explanation: dict[str, Any] | None = None) -> None:
        await self._pool.execute(
            "UPDATE call_records SET route_service = $2, route_reason = $3, route_targets = $4::jsonb,"
            " route_explanation = $5::jsonb WHERE id = $1", record_id, service, reason,
            json.dumps(targets, ensure_ascii=False), json.dumps(explanation or {}, ensure_ascii=False))

    async def explained_more(self, record_id: int, skipped_live: list[dict[str, Any]]) -> None:
        """Add to the explanation what only ringing found out (people claimed by other calls)."""
        await self._pool.execute(
            "UPDATE call_records SET route_explanation = jsonb_set(route_explanation, '{skipped_live}',"
            " COALESCE(route_explanation->'skipped_live', '[]'::jsonb) || $2::jsonb) WHERE id = $1",
            record_id, json.dumps(skipped_live, ensure_ascii=False))

    async def answered(self, record_id: int, at: datetime) -> None:
        await self._pool.execute(
            "UPDATE call_records SET answered_at = $2 WHERE id = $1 AND answered_at IS NULL",
            record_id, at)

    async def dial_started(self, record_id: int, staff_id: int | None, sip_uri: str,
                           at: datetime) -> int:
        """A new attempt, numbered from 1 in ringing order; returns its number."""
        return await self._pool.fetchval(
            """INSERT INTO dial_attempts (call_record_id, seq, staff_id, sip_uri, started_at)
               SELECT $1, COALESCE(max(seq), 0) + 1, $2, $3, $4
               FROM dial_attempts WHERE call_record_id = $1
               RETURNING seq""",
            record_id, staff_id, sip_uri, at)

    async def dial_started_as(self, record_id: int, seq: int, staff_id: int | None, sip_uri: str,
                              at: datetime) -> None:
        """An attempt whose number the caller chose (the journal's, replayed): once only."""
        await self._pool.execute(
            """INSERT INTO dial_attempts (call_record_id, seq, staff_id, sip_uri, started_at)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (call_record_id, seq) DO NOTHING""",
            record_id, seq, staff_id, sip_uri, at)

    async def dial_ended(self, record_id: int, seq: int, outcome: str, at: datetime) -> None:
        if outcome not in DIAL_OUTCOMES:
            raise ValueError(f"unknown dial outcome {outcome!r}")
        await self._pool.execute(
            "UPDATE dial_attempts SET outcome = $3, ended_at = $4 WHERE call_record_id = $1 AND seq = $2",
            record_id, seq, outcome, at)
        if outcome == "answered":
            # who answered: the console's "calls she took" (routing/scope.py); an outbound call
            # is connected when the resident answers (outbound_connected), not her own phone
            await self._pool.execute(
                "UPDATE call_records SET connected_at = $2, answered_by = (SELECT a.staff_id FROM"
                " dial_attempts a WHERE a.call_record_id = $1 AND a.seq = $3)"
                " WHERE id = $1 AND connected_at IS NULL AND direction = 'inbound'", record_id, at, seq)

    async def ended(self, record_id: int, at: datetime, disposition: str, reason: str | None = None) -> None:
        """Close the record; `reason` when the parties did not end the call (END_REASONS)."""
        if disposition not in DISPOSITIONS:
            raise ValueError(f"unknown disposition {disposition!r}")
        if reason is not None and reason not in END_REASONS:
            raise ValueError(f"unknown end reason {reason!r}")
        await self._pool.execute(
            "UPDATE call_records SET ended_at = $2, disposition = $3, end_reason = $4"
            " WHERE id = $1 AND ended_at IS NULL", record_id, at, disposition, reason)

    async def close_recovered(self, record_id: int, now: datetime, disposition: str,
                              note: str | None = None) -> None:
        """Close a record a dead run left open, at `now` or the record's own latest time if that
        is later (never before offered_at: the table's CHECK), its open dial attempts with it.
        `note` says what recovery could not do for it."""
        if disposition not in DISPOSITIONS:
            raise ValueError(f"unknown disposition {disposition!r}")
        async with self._pool.acquire() as conn, conn.transaction():
            at = await conn.fetchval(_CLOSING_TIME, record_id, now)
            if at is None:
                return
            await conn.execute(
                "UPDATE dial_attempts SET outcome = COALESCE(outcome, 'cancelled'),"
                " ended_at = GREATEST($2::timestamptz, started_at) WHERE call_record_id = $1 AND ended_at IS NULL",
                record_id, at)
            await conn.execute(
                "UPDATE call_records SET ended_at = $2, disposition = $3, end_reason = 'recovered',"
                " recovery_note = $4 WHERE id = $1 AND ended_at IS NULL", record_id, at, disposition, note)

    async def dialog_established(self, record_id: int, state: dict[str, Any]) -> None:
        """A leg's SIP dialog is up (DialogState.to_json): kept so that a node restarted after a
        crash can hang up the phone at its end."""
        await self.dialog_sealed(record_id, self.seal_dialog(state))

    def seal_dialog(self, state: dict[str, Any]) -> str:
        """A dialog state sealed with the PII key (its URIs carry the caller's number and the
        phones' addresses), as text for the record or the journal."""
        return base64.b64encode(self._vault.encrypt(DIALOG_KIND, json.dumps(state, ensure_ascii=False))).decode()

    async def dialog_sealed(self, record_id: int, sealed: str) -> None:
        await self._pool.execute(
            "UPDATE call_records SET dialogs = dialogs || jsonb_build_array(jsonb_build_object('sealed', $2::text))"
            " WHERE id = $1", record_id, sealed)

    def opened_dialogs(self, call: UnfinishedCall) -> tuple[list[dict[str, Any]], list[str]]:
        """The dialog states stored for a call, and a problem line for each that cannot be read."""
        states, problems = [], []
        for entry in call.dialogs:
            try:
                blob = base64.b64decode(entry["sealed"], validate=True)
                states.append(json.loads(self._vault.decrypt(DIALOG_KIND, blob)))
            except Exception as exc:  # not ours, damaged, another key: the phone stays up
                problems.append(f"a stored SIP dialog is unreadable ({type(exc).__name__})")
        return states, problems

    async def held(self, record_id: int, note: dict[str, Any]) -> None:
        """A side of the conversation put the other on hold, or took it off (note: at, side, on,
        offset_s into the recording)."""
        await self._pool.execute(
            "UPDATE call_records SET holds = holds || jsonb_build_array($2::jsonb) WHERE id = $1",
            record_id, json.dumps(note))

    async def recording_started(self, record_id: int, path: str) -> None:
        """Name the file before a byte is written: after a crash, recovery finds it by the record."""
        await self._pool.execute("UPDATE call_records SET recording_path = $2 WHERE id = $1", record_id, path)

    async def voicemail_started(self, record_id: int, offset_s: float) -> None:
        """The beep has played: the caller's message starts `offset_s` seconds into the
        recording, on the caller's channel. A crash mid-message leaves the message there on
        disk; recovery cuts it out from this point."""
        await self._pool.execute(
            "UPDATE call_records SET voicemail_offset_s = $2 WHERE id = $1", record_id, offset_s)

    async def voicemail_nothing_said(self, record_id: int) -> None:
        """The caller said nothing after the beep: there is no message for recovery to cut."""
        await self._pool.execute(
            "UPDATE call_records SET voicemail_offset_s = NULL WHERE id = $1", record_id)

    async def unfinished(self) -> list[UnfinishedCall]:
        """Calls a previous run of this node left open (it was killed or crashed mid-call).
        Other nodes' open calls are live: they are not ours to close."""
        rows = await self._pool.fetch(
            """SELECT r.id, r.call_id, r.resident_id, r.caller_number_hash, r.caller_number_enc,
                      r.caller_number_masked, r.offered_at, r.connected_at, r.recording_path,
                      r.recording_sha256, r.route_targets, r.voicemail_offset_s,
                      r.route_service IS NOT NULL AS routed, r.dialogs,
                      ARRAY(SELECT DISTINCT a.staff_id FROM dial_attempts a
                            WHERE a.call_record_id = r.id AND a.staff_id IS NOT NULL) AS staff_ids
               FROM call_records r WHERE r.ended_at IS NULL AND r.node = $1 ORDER BY r.id""", self.node)
        return [UnfinishedCall(
            r["id"], r["call_id"], r["resident_id"], r["caller_number_hash"], r["caller_number_enc"],
            r["caller_number_masked"], r["offered_at"], r["connected_at"] is not None, r["routed"],
            r["recording_path"] if r["recording_sha256"] is None else None,
            json.loads(r["route_targets"]), r["voicemail_offset_s"], json.loads(r["dialogs"]),
            tuple(r["staff_ids"])) for r in rows]

    async def recorded(self, record_id: int, path: str, seconds: float, sha256: str) -> None:
        await self._pool.execute(
            "UPDATE call_records SET recording_path = $2, recording_seconds = $3, recording_sha256 = $4"
            " WHERE id = $1", record_id, path, seconds, sha256)
