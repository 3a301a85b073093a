"""Where a call's story is written: PostgreSQL, or the local journal while PostgreSQL is away.

The call flow writes through a CallEntry (one per call) and does not care which: each step goes
to PostgreSQL (recordings.call_records, handover.callbacks) while it answers, and to the journal
(recordings.journal) from the first step that finds it unreachable. Rules that keep the story
right when it is told twice over:

- Per call, once journaled always journaled: a call that wrote a step to the journal writes every
  later step there too, after first journaling its own `opened` event, so its steps are applied
  in the order they happened and a replay can always find or create its record (by Call-ID).
- New calls go to the journal while the CallLog is *degraded*: from the first unreachable write
  until the Replayer has drained the backlog once PostgreSQL is back. Nothing waits for a dead
  database twice: a degraded log does not try it (the Replayer probes it, with backoff).
- Exactly once: every event has a UUID; the Replayer inserts it into call_journal_applied in the
  same transaction as the event's effect, so a replay cut short (a crash, PostgreSQL lost again)
  and started over skips what was committed. The statements are idempotent besides.
- A segment is removed only when all its events are committed; an event PostgreSQL refuses for
  good (a constraint, a resident deleted meanwhile) is written to kept/rejected.jsonl with the
  reason and replay goes on: one bad event does not hold back every later call.

A call without a record id (opened in the journal) is still the same call: the record is found
by its SIP Call-ID (unique in call_records) when the journal is replayed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import structlog

from handover.callbacks import Callbacks
from recordings.call_records import (
    DIAL_OUTCOMES,
    DISPOSITIONS,
    CallerNumber,
    CallPlace,
    CallRecords,
)
from recordings.journal import KEPT, Journal, JournalError, Segment, encode, read_segment
from store.db import is_unreachable
from store.errors import reason_of

log = structlog.get_logger("recordings.call_log")

T = TypeVar("T")

# A direct write that takes longer than this is taken for a database that is away (a host that
# drops packets answers nothing, and the caller must not wait on it).
WRITE_TIMEOUT_S = 5.0
# The Replayer's backoff between attempts while PostgreSQL stays away.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 8.0  # PostgreSQL back: new calls write to it again within seconds
EVENT_VERSION = 1


def unreachable(exc: BaseException) -> bool:
    """PostgreSQL is away (refused, gone mid-statement, shutting down, too slow) — as opposed to a
    statement it refused, which is a bug or bad data and is raised as before."""
    return is_unreachable(exc)


@dataclass(frozen=True)
class Owed:
    """A callback promised. task_id None: written to the journal, the task is created on replay."""

    task_id: int | None
    created: bool | None
    due_at: datetime | None


def _iso(at: datetime) -> str:
    return at.isoformat()


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


class CallLog:
    """Opens one CallEntry per call. `journal` None: PostgreSQL only (a failure raises)."""

    def __init__(self, records: CallRecords, callbacks: Callbacks, journal: Journal | None):
        self.records = records
        self.callbacks = callbacks
        self.journal = journal
        self.degraded = False
        self.wake = asyncio.Event()  # the Replayer's: something was journaled

    @property
    def node(self) -> str:
        return self.records.node

    def open(self, call_id: str, number: CallerNumber, offered_at: datetime) -> CallEntry:
        return CallEntry(self, call_id, number, offered_at)

    def database_lost(self, exc: BaseException) -> None:
        if not self.degraded:
            log.error("call_log.database_away", why=reason_of(exc), journal=str(self.journal.directory)
                      if self.journal else None)
        self.degraded = True

    def database_back(self) -> None:
        if self.degraded:
            log.warning("call_log.database_back")
        self.degraded = False


class CallEntry:
    """One call's record, wherever it is written. Methods mirror CallRecords and Callbacks."""

    def __init__(self, log_: CallLog, call_id: str, number: CallerNumber, offered_at: datetime):
        self._log = log_
        self.call_id = call_id
        self.number = number
        self.offered_at = offered_at
        self.record_id: int | None = None
        self.journaled = False
        self._last_seq = 0

    # -- the seam -----------------------------------------------------------------------------

    async def _write(self, kind: str, data: dict[str, Any],
                     direct: Callable[[], Awaitable[T]] | None) -> tuple[bool, T | None]:
        """(True, result) when written to PostgreSQL; (False, None) when journaled."""
        call_log = self._log
        if direct is not None and not self.journaled and (not call_log.degraded or call_log.journal is None):
            try:
                return True, await asyncio.wait_for(direct(), WRITE_TIMEOUT_S)
            except Exception as exc:
                if call_log.journal is None or not unreachable(exc):
                    raise
                call_log.database_lost(exc)
        assert call_log.journal is not None
        if not self.journaled:
            self.journaled = True
            if kind != "opened":  # the journal's story of this call starts with its record
                await self._journal("opened", self._opened_data())
        await self._journal(kind, data)
        return False, None

    async def _journal(self, kind: str, data: dict[str, Any]) -> None:
        event = {"v": EVENT_VERSION, "id": str(uuid.uuid4()), "kind": kind, "call_id": self.call_id,
                 "node": self._log.node, **data}
        journal = self._log.journal
        assert journal is not None
        await journal.append(event)
        self._log.wake.set()

    def _opened_data(self) -> dict[str, Any]:
        n = self.number
        return {"offered_at": _iso(self.offered_at), "masked": n.masked, "hash": _b64(n.hash),
                "enc": _b64(n.encrypted)}

    # -- the call's steps ---------------------------------------------------------------------

    async def open(self) -> None:
        records = self._log.records
        direct, record_id = await self._write(
            "opened", self._opened_data(), lambda: records.open(self.call_id, self.number, self.offered_at))
        if direct:
            self.record_id = record_id

    def _direct(self, call: Callable[[int], Awaitable[T]]) -> Callable[[], Awaitable[T]] | None:
        """A direct write needs the record id; a call opened in the journal has none."""
        record_id = self.record_id
        return None if record_id is None else (lambda: call(record_id))

    async def identified(self, resident_id: int) -> None:
        r = self._log.records
        await self._write("identified", {"resident_id": resident_id},
                          self._direct(lambda i: r.identified(i, resident_id)))

    async def placed(self, place: CallPlace) -> None:
        r = self._log.records
        await self._write("placed", place.as_json(), self._direct(lambda i: r.placed(i, place)))

    async def key_pressed(self, at: datetime, key: str, menu: str) -> None:
        r = self._log.records
        note = {"at": _iso(at), "key": key, "menu": menu}
        await self._write("key_pressed", note, self._direct(lambda i: r.key_pressed(i, note)))

    async def routed(self, service: str | None, reason: str, targets: list[dict[str, Any]],
                     explanation: dict[str, Any] | None = None) -> None:
        r = self._log.records
        await self._write("routed", {"service": service, "reason": reason, "targets": targets,
                                     "explanation": explanation or {}},
                          self._direct(lambda i: r.routed(i, service, reason, targets, explanation)))

    async def explained_more(self, skipped_live: list[dict[str, Any]]) -> None:
        r = self._log.records
        await self._write("explained_more", {"skipped_live": skipped_live},
                          self._direct(lambda i: r.explained_more(i, skipped_live)))

    async def answered(self, at: datetime) -> None:
        r = self._log.records
        await self._write("answered", {"at": _iso(at)}, self._direct(lambda i: r.answered(i, at)))

    async def dial_started(self, staff_id: int | None, sip_uri: str, at: datetime) -> int:
        r = self._log.records
        seq = self._last_seq + 1
        direct, stored = await self._write(
            "dial_started", {"seq": seq, "staff_id": staff_id, "sip_uri": sip_uri, "at": _iso(at)},
            self._direct(lambda i: r.dial_started(i, staff_id, sip_uri, at)))
        self._last_seq = stored if direct and stored is not None else seq
        return self._last_seq

    async def dial_ended(self, seq: int, outcome: str, at: datetime) -> None:
        if outcome not in DIAL_OUTCOMES:
            raise ValueError(f"unknown dial outcome {outcome!r}")
        r = self._log.records
        await self._write("dial_ended", {"seq": seq, "outcome": outcome, "at": _iso(at)},
                          self._direct(lambda i: r.dial_ended(i, seq, outcome, at)))

    async def ended(self, at: datetime, disposition: str, end_reason: str | None = None) -> None:
        if disposition not in DISPOSITIONS:
            raise ValueError(f"unknown disposition {disposition!r}")
        r = self._log.records
        await self._write("ended", {"at": _iso(at), "disposition": disposition, "end_reason": end_reason},
                          self._direct(lambda i: r.ended(i, at, disposition, end_reason)))

    async def dialog_established(self, state: dict[str, Any]) -> None:
        """A leg's SIP dialog, sealed with the PII key before it is written anywhere."""
        r = self._log.records
        sealed = r.seal_dialog(state)
        await self._write("dialog", {"sealed": sealed}, self._direct(lambda i: r.dialog_sealed(i, sealed)))

    async def held(self, at: datetime, side: str, on: bool, offset_s: float) -> None:
        r = self._log.records
        note = {"at": _iso(at), "side": side, "on": on, "offset_s": offset_s}
        await self._write("held", note, self._direct(lambda i: r.held(i, note)))

    async def recording_started(self, path: str) -> None:
        r = self._log.records
        await self._write("recording_started", {"path": path},
                          self._direct(lambda i: r.recording_started(i, path)))

    async def recorded(self, path: str, seconds: float, sha256: str) -> None:
        r = self._log.records
        await self._write("recorded", {"path": path, "seconds": seconds, "sha256": sha256},
                          self._direct(lambda i: r.recorded(i, path, seconds, sha256)))

    async def voicemail_started(self, offset_s: float) -> None:
        r = self._log.records
        await self._write("voicemail_started", {"offset_s": offset_s},
                          self._direct(lambda i: r.voicemail_started(i, offset_s)))

    async def voicemail_nothing_said(self) -> None:
        r = self._log.records
        await self._write("voicemail_nothing_said", {},
                          self._direct(lambda i: r.voicemail_nothing_said(i)))

    async def owe_callback(self, *, resident_id: int | None, owner_staff_id: int | None,
                           missed_at: datetime) -> Owed | None:
        """The 8-hour promise for this call (None: no number to call back)."""
        n = self.number
        if n.hash is None:
            return None
        cb = self._log.callbacks

        async def direct(record_id: int) -> Any:
            return await cb.owe_for_missed_call(
                call_record_id=record_id, resident_id=resident_id, number_hash=n.hash or b"",
                number_encrypted=n.encrypted or b"", number_masked=n.masked,
                owner_staff_id=owner_staff_id, missed_at=missed_at)

        stored, owed = await self._write(
            "callback_owed", {"resident_id": resident_id, "owner_staff_id": owner_staff_id,
                              "missed_at": _iso(missed_at)}, self._direct(direct))
        if stored and owed is not None:
            return Owed(owed.task_id, owed.created, owed.due_at)
        return Owed(None, None, None)

    async def attach_voicemail(self, *, path: str, seconds: float, sha256: str, recorded_at: datetime) -> None:
        """The caller's message, kept with the callback task this call is attached to."""
        cb = self._log.callbacks
        await self._write("voicemail_attached", {"path": path, "seconds": seconds, "sha256": sha256,
                                                 "recorded_at": _iso(recorded_at)},
                          self._direct(lambda i: cb.attach_voicemail_to_call(
                              call_record_id=i, path=path, seconds=seconds, sha256=sha256,
                              recorded_at=recorded_at)))


# -- replay ---------------------------------------------------------------------------------------


class RejectedEvent(Exception):
    """An event PostgreSQL will never take (kept aside, replay goes on)."""


async def apply_event(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    """One journaled event's effect, on `conn` inside the caller's transaction."""
    kind = event["kind"]
    records = CallRecords(conn, None, node=str(event.get("node", "")))  # type: ignore[arg-type]
    if kind == "opened":
        number = CallerNumber(event["masked"], _unb64(event.get("hash")), _unb64(event.get("enc")))
        await records.open(event["call_id"], number, _at(event["offered_at"]))
        return
    record_id = await conn.fetchval("SELECT id FROM call_records WHERE call_id = $1", event["call_id"])
    if record_id is None:
        raise RejectedEvent(f"no call record for Call-ID {event['call_id']!r}")
    callbacks = Callbacks(conn)
    match kind:
        case "identified":
            await records.identified(record_id, event["resident_id"])
        case "placed":
            await records.placed(record_id, CallPlace(
                event.get("line"), event.get("district_id"), event.get("center_id"), event.get("team_id")))
        case "key_pressed":
            await records.key_pressed(record_id, {k: event[k] for k in ("at", "key", "menu")})
        case "routed":
            await records.routed(record_id, event["service"], event["reason"], event["targets"],
                                 event["explanation"])
        case "explained_more":
            await records.explained_more(record_id, event["skipped_live"])
        case "answered":
            await records.answered(record_id, _at(event["at"]))
        case "dial_started":
            await records.dial_started_as(record_id, event["seq"], event["staff_id"], event["sip_uri"],
                                          _at(event["at"]))
        case "dial_ended":
            await records.dial_ended(record_id, event["seq"], event["outcome"], _at(event["at"]))
        case "ended":
            await records.ended(record_id, _at(event["at"]), event["disposition"], event.get("end_reason"))
        case "dialog":
            await records.dialog_sealed(record_id, event["sealed"])
        case "held":
            await records.held(record_id, {k: event[k] for k in ("at", "side", "on", "offset_s")})
        case "recording_started":
            await records.recording_started(record_id, event["path"])
        case "recorded":
            await records.recorded(record_id, event["path"], event["seconds"], event["sha256"])
        case "voicemail_started":
            await records.voicemail_started(record_id, event["offset_s"])
        case "voicemail_nothing_said":
            await records.voicemail_nothing_said(record_id)
        case "callback_owed":
            row = await conn.fetchrow(
                "SELECT caller_number_hash, caller_number_enc, caller_number_masked FROM call_records"
                " WHERE id = $1", record_id)
            if row["caller_number_hash"] is None:
                raise RejectedEvent("a callback owed to a call without a number")
            await callbacks.owe_for_missed_call(
                call_record_id=record_id, resident_id=event["resident_id"],
                number_hash=row["caller_number_hash"], number_encrypted=row["caller_number_enc"],
                number_masked=row["caller_number_masked"], owner_staff_id=event["owner_staff_id"],
                missed_at=_at(event["missed_at"]))
        case "voicemail_attached":
            await callbacks.attach_voicemail_to_call(
                call_record_id=record_id, path=event["path"], seconds=event["seconds"],
                sha256=event["sha256"], recorded_at=_at(event["recorded_at"]))
        case _:
            raise RejectedEvent(f"unknown event kind {kind!r}")


@dataclass
class ReplayResult:
    applied: int = 0  # committed now
    skipped: int = 0  # committed by an earlier replay
    rejected: int = 0  # refused by PostgreSQL for good, kept aside
    segments: int = 0  # removed (or kept aside) after replay


class Replayer:
    """Drains the journal into PostgreSQL: at start-up, and whenever something was journaled,
    retrying with backoff while PostgreSQL stays away."""

    def __init__(self, call_log: CallLog, pool: asyncpg.Pool):
        assert call_log.journal is not None
        self.call_log = call_log
        self.journal: Journal = call_log.journal
        self.pool = pool
        self.total = ReplayResult()

    async def drain(self) -> ReplayResult:
        """One pass: seal the active segment and replay every sealed one. Raises when PostgreSQL
        is unreachable (what was committed stays committed)."""
        result = ReplayResult()
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")  # reachable: only now start a new segment
            await self.journal.seal()
            for path in self.journal.sealed_segments():
                with self.journal.claim(path) as mine:
                    if mine:
                        await self._replay(conn, read_segment(path), result)
        for name in ("applied", "skipped", "rejected", "segments"):
            setattr(self.total, name, getattr(self.total, name) + getattr(result, name))
        return result

    async def _replay(self, conn: asyncpg.Connection, segment: Segment, result: ReplayResult) -> None:
        for event in segment.events:
            try:
                async with conn.transaction():
                    fresh = await conn.fetchval(
                        "INSERT INTO call_journal_applied (event_id, segment) VALUES ($1, $2)"
                        " ON CONFLICT DO NOTHING RETURNING true", uuid.UUID(event["id"]), segment.name)
                    if fresh:
                        await apply_event(conn, event)
            except Exception as exc:
                if unreachable(exc):
                    raise
                self._reject(segment, event, exc)
                result.rejected += 1
                continue
            if fresh:
                result.applied += 1
            else:
                result.skipped += 1
        if segment.damaged:
            kept = self.journal.keep_aside(segment.path)
            log.warning("journal.segment_kept", path=str(kept), torn_tail_bytes=len(segment.torn_tail),
                        bad_lines=segment.bad_lines,
                        why="a crash cut its last line, or lines do not decode: kept for a look")
        else:
            self.journal.remove(segment.path)
        # Its file gone, no event of it can come back: the ids need not be kept.
        await conn.execute("DELETE FROM call_journal_applied WHERE segment = $1", segment.name)
        result.segments += 1
        log.info("journal.segment_replayed", segment=segment.name, events=len(segment.events))

    def _reject(self, segment: Segment, event: dict[str, Any], exc: BaseException) -> None:
        log.error("journal.event_rejected", segment=segment.name, event_id=event.get("id"),
                  kind=event.get("kind"), why=reason_of(exc))
        kept = self.journal.directory / KEPT
        kept.mkdir(mode=0o700, exist_ok=True)
        line = encode({"segment": segment.name, "why": reason_of(exc), "event": event})
        fd = os.open(kept / "rejected.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def run(self) -> None:
        """Forever (cancel to stop): drain whenever something is journaled; back off while
        PostgreSQL is away; tell the CallLog when the backlog is committed."""
        delay = RETRY_FIRST_S
        while True:
            if not self.journal.holds_events() and not self.call_log.degraded:
                self.call_log.wake.clear()
                await self.call_log.wake.wait()
            try:
                result = await self.drain()
            except Exception as exc:
                if not unreachable(exc):
                    log.exception("journal.replay_failed")
                else:
                    log.info("journal.database_still_away", why=reason_of(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_FIRST_S
            if result.applied or result.rejected:
                log.warning("journal.replayed", applied=result.applied, skipped=result.skipped,
                            rejected=result.rejected, segments=result.segments)
            # The backlog that made the log degraded is committed: new calls go straight to
            # PostgreSQL again (calls still journaling keep to the journal until they end).
            self.call_log.database_back()
            if self.journal.holds_events():
                await asyncio.sleep(RETRY_FIRST_S)  # calls still journaling: drain again shortly


__all__ = ["CallEntry", "CallLog", "JournalError", "Owed", "Replayer", "apply_event", "unreachable"]
