"""The console's call list, call detail and recordings: every read of call records for staff.

Each query ANDs the signed-in viewer's scope (routing/scope.py `Scope.calls`) into its WHERE:
a call outside it is never listed, counted or exported, and reading it by id finds nothing
(None: the web layer answers 404). Filters are values bound as parameters; the SQL text is
built only from constant fragments and the scope's predicate.

The list is newest first, keyset-paginated on (offered_at, id): the cursor is an opaque string
naming the last row shown, so a page never repeats or skips a call when new calls arrive.
Numbers are shown masked; a caller number searched for is normalised and hashed as the
directory does (routing/numbers.py, store/pii.py), never compared in clear.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from routing.numbers import DEFAULT_AREA_CODE, InvalidNumber, normalize_phone
from routing.records import PHONE
from routing.scope import CallsArm, Params, Scope
from store.pii import PiiVault

# 'in_progress': the call is still going (or its node died and recovery has not closed it yet).
SEARCH_DISPOSITIONS = ("connected", "missed", "abandoned", "ivr_only", "failed", "in_progress")
MAX_PAGE = 500
MAX_TEXT = 64  # a name or a line longer than this matches nothing we store: refused
EXPORT_LIMIT = 100_000
# A person's newest attempts walked one by one, per call asked for, before her calls are tested
# all at once instead (CallSearch._staff_walk).
WALK_SPAN = 20
_CHUNK = 1 << 20


# -- the filter -----------------------------------------------------------------------------------


def _positive_id(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer id, not {value!r}")


@dataclass(frozen=True)
class CallFilter:
    """What the call list is narrowed to; every field optional. `until` is exclusive.
    `staff_id`: calls that rang her or that she answered. `caller_number`: any form a person
    types (138…, +86…, a landline with or without 022); it matches the calling number or any
    number of the resident. `resident_name`: the resident's name, exact or its beginning."""

    since: datetime | None = None
    until: datetime | None = None
    center_id: int | None = None
    team_id: int | None = None
    staff_id: int | None = None
    disposition: str | None = None
    line: str | None = None
    resident_id: int | None = None
    caller_number: str | None = None
    resident_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            at = getattr(self, name)
            if at is not None and (not isinstance(at, datetime) or at.tzinfo is None):
                raise ValueError(f"{name} must be a datetime with a time zone")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("since must not be after until")
        for name in ("center_id", "team_id", "staff_id", "resident_id"):
            _positive_id(name, getattr(self, name))
        if self.disposition is not None and self.disposition not in SEARCH_DISPOSITIONS:
            raise ValueError(f"unknown disposition {self.disposition!r}: one of "
                             + ", ".join(SEARCH_DISPOSITIONS))
        for name in ("line", "caller_number", "resident_name"):
            text = getattr(self, name)
            if text is None:
                continue
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{name} must be a non-empty text")
            if len(text) > MAX_TEXT or "\x00" in text:
                raise ValueError(f"{name} is too long or not text (at most {MAX_TEXT} characters)")


# -- rows -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRow:
    """One call as the list shows it (the number masked). duration_s: offered to ended;
    time_to_answer_s: offered to a human answering (None if nobody did)."""

    id: int
    offered_at: datetime
    caller_number_masked: str
    resident_id: int | None
    resident_name: str | None
    line: str | None
    center_name: str | None
    team_name: str | None
    disposition: str
    answered_by_name: str | None
    connected_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    time_to_answer_s: float | None
    has_recording: bool

    def as_json(self) -> dict[str, Any]:
        return {f.name: (v.isoformat() if isinstance(v := getattr(self, f.name), datetime) else v)
                for f in fields(self)}


# The CSV export's columns, in order (the web layer writes them with store.spreadsheet.csv_writer).
EXPORT_COLUMNS = tuple(f.name for f in fields(CallRow))


def export_values(row: CallRow) -> list[Any]:
    return [getattr(row, name) for name in EXPORT_COLUMNS]


@dataclass(frozen=True)
class CallPage:
    rows: list[CallRow]
    next_cursor: str | None  # None: this is the last page


@dataclass(frozen=True)
class DialAttemptView:
    seq: int
    staff_id: int | None
    staff_name: str | None
    sip_uri: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None


@dataclass(frozen=True)
class TimelineEvent:
    """One step of the call. `kind`: offered, greeted, key_pressed, routed, ringing, dial_ended,
    connected, hold, resume, voicemail, callback_owed, ended."""

    at: datetime
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordingMeta:
    seconds: float | None
    sha256: str | None
    finished: bool  # written to its end with its checksum
    on_disk: bool


@dataclass(frozen=True)
class CallbackView:
    task_id: int
    status: str
    opened_at: datetime
    due_at: datetime
    voicemail_id: int | None
    voicemail_seconds: float | None


@dataclass(frozen=True)
class CallDetail:
    row: CallRow
    route_service: str | None
    route_reason: str
    route_explanation: dict[str, Any]
    end_reason: str | None
    recovery_note: str | None
    attempts: list[DialAttemptView]
    keys: list[dict[str, Any]]
    holds: list[dict[str, Any]]
    timeline: list[TimelineEvent]
    recording: RecordingMeta | None
    callback: CallbackView | None


@dataclass(frozen=True)
class RecordingRef:
    """A recording or voicemail file of a call in scope: the path comes from the record only."""

    path: Path
    sha256: str
    seconds: float


# -- cursors --------------------------------------------------------------------------------------


def encode_cursor(offered_at: datetime, record_id: int) -> str:
    return base64.urlsafe_b64encode(f"{offered_at.isoformat()}|{record_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """(offered_at, id) of the last row of the previous page; ValueError for anything else."""
    try:
        if not isinstance(cursor, str) or not 0 < len(cursor) <= 128:
            raise ValueError
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        at_text, _, id_text = text.partition("|")
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None or not id_text.isdigit():
            raise ValueError
        record_id = int(id_text)
        if not 0 < record_id < 2**63:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("malformed cursor") from None
    return at, record_id


# -- checksums ------------------------------------------------------------------------------------


def sha256_of(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def verify_checksum(path: Path | str, sha256: str) -> bool:
    """The file is there and is what was recorded (read in a thread, streamed)."""
    try:
        return await asyncio.to_thread(sha256_of, path) == sha256
    except OSError:
        return False


# -- the queries ----------------------------------------------------------------------------------

_ROW_COLUMNS = """c.id, c.offered_at, c.caller_number_masked, c.resident_id, r.name AS resident_name,
    c.line, ce.name AS center_name, t.name AS team_name, c.disposition, s.name AS answered_by_name,
    c.connected_at, c.ended_at,
    EXTRACT(EPOCH FROM c.ended_at - c.offered_at)::float8 AS duration_s,
    EXTRACT(EPOCH FROM c.connected_at - c.offered_at)::float8 AS time_to_answer_s,
    c.recording_sha256 IS NOT NULL AS has_recording"""
_ROW_JOINS = """FROM call_records c
    LEFT JOIN residents r ON r.id = c.resident_id
    LEFT JOIN centers ce ON ce.id = c.center_id
    LEFT JOIN teams t ON t.id = c.team_id
    LEFT JOIN staff s ON s.id = c.answered_by"""
_ORDER = "ORDER BY c.offered_at DESC, c.id DESC"


def _arm_query(arm: CallsArm, filters: list[str], tail: str) -> str:
    """The ids of one arm of the scope that match the filters, with `tail` (order, limit)."""
    where = " AND ".join([f"({arm.where})", *filters])
    if arm.walk is not None:
        # the same order (the column is constant within the arm), spelled as its index is
        tail = tail.replace(_ORDER, f"ORDER BY {arm.walk}, c.offered_at DESC, c.id DESC")
    inner = f"SELECT c.id, c.offered_at FROM call_records c WHERE {where}{tail}"  # noqa: S608 (constant + scope)
    if arm.source is None:
        return inner
    # each of the arm's rows (her shifts), then that row's calls by an index, newest first
    return f"SELECT x.id, x.offered_at FROM {arm.source} CROSS JOIN LATERAL ({inner}) x WHERE {arm.source_where}"  # noqa: S608


def _row(r: asyncpg.Record) -> CallRow:
    return CallRow(r["id"], r["offered_at"], r["caller_number_masked"], r["resident_id"], r["resident_name"],
                   r["line"], r["center_name"], r["team_name"], r["disposition"], r["answered_by_name"],
                   r["connected_at"], r["ended_at"], r["duration_s"], r["time_to_answer_s"],
                   r["has_recording"])


def _prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """[low, high) of the texts beginning with `prefix` in byte order (text_pattern_ops); high
    None when the last character cannot be incremented."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return prefix, None
    nxt = last + 1
    if 0xD800 <= nxt <= 0xDFFF:  # no surrogates in UTF-8 text: skip past them
        nxt = 0xE000
    return prefix, prefix[:-1] + chr(nxt)


class CallSearch:
    def __init__(self, pool: asyncpg.Pool, vault: PiiVault, *, area_code: str = DEFAULT_AREA_CODE):
        self._pool = pool
        self._vault = vault
        self._area_code = area_code

    def _where(self, scope: Scope, filt: CallFilter, p: Params) -> str:
        """The scope's predicate and the filter's, ANDed; values bound in `p`."""
        return " AND ".join([f"({scope.calls(p, 'c')})", *self._filters(filt, p)])

    def _filters(self, filt: CallFilter, p: Params, *, staff: bool = True) -> list[str]:
        """The filter's predicates over `c`; values bound in `p`. Without `staff`, the person's
        predicate is left out (the query walks her dial attempts instead: `_staff_walk`)."""
        parts: list[str] = []
        if filt.since is not None:
            parts.append(f"c.offered_at >= {p.add(filt.since)}")
        if filt.until is not None:
            parts.append(f"c.offered_at < {p.add(filt.until)}")
        if filt.center_id is not None:
            parts.append(f"c.center_id = {p.add(filt.center_id)}")
        if filt.team_id is not None:
            parts.append(f"c.team_id = {p.add(filt.team_id)}")
        if filt.disposition is not None:
            parts.append(f"c.disposition = {p.add(filt.disposition)}")
        if filt.line is not None:
            parts.append(f"c.line = {p.add(filt.line.strip())}")
        if filt.resident_id is not None:
            parts.append(f"c.resident_id = {p.add(filt.resident_id)}")
        if staff and filt.staff_id is not None:
            # answered_by is always one of the call's dial attempts: the attempts say it all.
            # An attempt starts after its call was offered: `since` prunes them too.
            since = f" AND a.started_at >= {p.add(filt.since)}" if filt.since is not None else ""
            staff = p.add(filt.staff_id)
            # ANY(ARRAY(…)): her attempts are looked up first (one index range), then their calls
            # by id; as a semi-join the planner may walk every call newest first instead.
            parts.append("c.id = ANY(ARRAY(SELECT a.call_record_id FROM dial_attempts a"  # noqa: S608 (placeholders)
                         f" WHERE a.staff_id = {staff}{since}))")
        if filt.caller_number is not None:
            try:
                number = normalize_phone(filt.caller_number, self._area_code)
            except InvalidNumber:
                raise ValueError("caller_number is not a phone number") from None
            h = p.add(self._vault.lookup_hash(PHONE, number))
            parts.append(f"(c.caller_number_hash = {h} OR c.resident_id = ANY(ARRAY("  # noqa: S608 (placeholders)
                         f"SELECT ph.resident_id FROM resident_phones ph WHERE ph.phone_hash = {h})))")
        if filt.resident_name is not None:
            low, high = _prefix_bounds(filt.resident_name.strip())
            upper = f" AND rn.name ~<~ {p.add(high)}" if high is not None else ""
            parts.append("c.resident_id = ANY(ARRAY(SELECT rn.id FROM residents rn"  # noqa: S608 (placeholders)
                         f" WHERE rn.name ~>=~ {p.add(low)}{upper}))")
        return parts

    @staticmethod
    def _after(after: str | None, p: Params) -> list[str]:
        """The keyset cursor as a predicate (none on the first page)."""
        if after is None:
            return []
        at, record_id = decode_cursor(after)
        return [f"(c.offered_at, c.id) < ({p.add(at)}::timestamptz, {p.add(record_id)}::bigint)"]

    def _matching(self, scope: Scope, filt: CallFilter, p: Params, *, after: str | None,
                  limit: int | None, ordered: bool = True) -> str:
        """A query of the ids of the calls in scope that match: the newest `limit` of them
        (any `limit` when not `ordered`; all of them when `limit` is None).

        A scope of several arms (a doctor's team's calls OR the calls she took OR her shifts')
        is queried arm by arm, each arm's newest `limit` by its own index, and merged: the
        newest `limit` of the OR are among them. The keyset cursor goes inside each arm.
        A filter naming a person walks her dial attempts instead (`_staff_walk`)."""
        if filt.staff_id is not None:
            return self._staff_walk(scope, filt, p, after=after, limit=limit, ordered=ordered)
        arms = scope.calls_arms(p, "c")
        filters = self._filters(filt, p) + self._after(after, p)
        tail = (f" {_ORDER}" if ordered else "") + (f" LIMIT {int(limit)}" if limit is not None else "")
        if len(arms) == 1 and arms[0].source is None and arms[0].walk is None:
            where = " AND ".join([f"({arms[0].where})", *filters])
            return f"SELECT c.id, c.offered_at FROM call_records c WHERE {where}{tail}"  # noqa: S608 (constant + scope)
        return " UNION ".join(f"({_arm_query(arm, filters, tail)})" for arm in arms)

    def _staff_walk(self, scope: Scope, filt: CallFilter, p: Params, *, after: str | None,
                    limit: int | None, ordered: bool) -> str:
        """The ids of the matching calls in scope that rang the filter's person (or that she
        answered: answered_by is always one of the call's dial attempts), newest first.

        Her attempts are few beside a district's or a center's calls, yet a desk agent or a
        district's duty doctor has tens of thousands: reading them all, with their calls, and
        then sorting took up to 1.8 s at a million calls. So her newest attempts are walked
        first (the index (staff_id, started_at)), each one's call tested against the scope (the
        OR of its arms) and the other filters, until 2 × `limit` are found. Calls are ordered
        by offered_at, the walk by the attempt's start, and an attempt starts after its call
        was offered, so:
        - when the walk found them, the `limit`-th newest of the distinct calls it found is a
          floor: the newest `limit` matching calls are all offered at or after it (a subset of
          `limit` calls has its `limit`-th no newer than the whole set's), and every attempt of
          a call offered at or after it started at or after it. The calls of her attempts
          started since the floor (the walked ones again, and those rung minutes after being
          offered) are tested again, and the caller sorts them. (Twice `limit`: the floor needs
          `limit` distinct calls, and she may have been rung twice for one.)
        - when her attempts ran out first, what the walk found is all;
        - when her newest WALK_SPAN × `limit` attempts held fewer (a director asking for a person
          of another center: her calls are rarely in scope), walking on would test her calls
          one by one: her attempts' calls are tested all at once instead (by id, in index order).
        Unordered or unlimited (a count, every row): her attempts' calls, tested."""
        staff = p.add(filt.staff_id)
        # an attempt starts after its call was offered: `since` prunes her attempts too
        since = f" AND a.started_at >= {p.add(filt.since)}" if filt.since is not None else ""
        where = " AND ".join([f"({scope.calls(p, 'c')})", *self._filters(filt, p, staff=False),
                              *self._after(after, p)])
        attempts = f"SELECT a.call_record_id FROM dial_attempts a WHERE a.staff_id = {staff}{since}"  # noqa: S608 (placeholders)
        # her attempts' calls, tested: by id (ANY(ARRAY(…)): her attempts first, one index range)
        def calls(of_attempts: str = "") -> str:
            return f"SELECT c.id, c.offered_at FROM call_records c WHERE c.id = ANY(ARRAY({attempts}{of_attempts})) AND {where}"  # noqa: S608 (constant + scope)

        if not ordered or limit is None:
            return calls() + (f" LIMIT {int(limit)}" if limit is not None else "")
        n = int(limit)
        walk, span = 2 * n, WALK_SPAN * n
        # The call of an attempt when it is in scope and matches: its offered_at, else NULL. A
        # scalar subquery, not a join: PostgreSQL cannot tell how many of her calls the scope
        # keeps (a doctor's team: nearly all, it guesses a few) and, expecting to read them all,
        # read and sorted them all; as a filter of the attempts, they are tested in turn and the
        # walk stops at the limit.
        call = f"(SELECT c.offered_at FROM call_records c WHERE c.id = r.call_record_id AND {where})"  # noqa: S608 (constant + scope)
        # constant fragments, the scope's predicate and $n placeholders only
        return (
            f"WITH recent AS MATERIALIZED (SELECT a.call_record_id, a.started_at FROM dial_attempts a"  # noqa: S608
            f" WHERE a.staff_id = {staff}{since} ORDER BY a.started_at DESC LIMIT {span}),"
            f" walked AS MATERIALIZED (SELECT r.call_record_id AS id, {call} AS offered_at FROM recent r"
            f" WHERE {call} IS NOT NULL ORDER BY r.started_at DESC LIMIT {walk}),"
            f" found AS MATERIALIZED (SELECT (SELECT count(*) FROM walked) = {walk} AS enough,"
            f" (SELECT count(*) FROM recent) < {span} AS all_walked,"
            " coalesce((SELECT d.offered_at FROM (SELECT DISTINCT w.id, w.offered_at FROM walked w) d"
            f" ORDER BY d.offered_at DESC OFFSET {n - 1} LIMIT 1), '-infinity') AS floor_at)"
            " SELECT DISTINCT w.id, w.offered_at FROM walked w"
            " WHERE (SELECT NOT enough AND all_walked FROM found)"
            " UNION ALL " + calls(" AND a.started_at >= (SELECT floor_at FROM found)")
            + " AND (SELECT enough FROM found) AND c.offered_at >= (SELECT floor_at FROM found)"
            " UNION ALL " + calls() + " AND (SELECT NOT enough AND NOT all_walked FROM found)")

    def _rows_sql(self, scope: Scope, filt: CallFilter, p: Params, *, after: str | None, limit: int) -> str:
        """The newest `limit` matching calls as the list shows them."""
        arms = scope.calls_arms(Params(), "c")  # (only counted: the placeholders are _matching's)
        if filt.staff_id is None and len(arms) == 1 and arms[0].source is None and arms[0].walk is None:
            # one index walk: the rows themselves, no merge
            where = " AND ".join([self._where(scope, filt, p), *self._after(after, p)])
            # constant fragments and the scope's predicate only; every value is a parameter
            return f"SELECT {_ROW_COLUMNS} {_ROW_JOINS} WHERE {where} {_ORDER} LIMIT {int(limit)}"  # noqa: S608
        # the newest `limit` of the matching ids first (the arms' merged, or the person's walk),
        # then those rows' names: joining every arm's rows to their names before the limit would
        # read them all
        matching = self._matching(scope, filt, p, after=after, limit=limit)
        newest = f"SELECT m.id FROM ({matching}) m ORDER BY m.offered_at DESC, m.id DESC LIMIT {int(limit)}"  # noqa: S608 (constant + scope)
        joins = _ROW_JOINS.replace("FROM call_records c", f"FROM ({newest}) n JOIN call_records c ON c.id = n.id", 1)
        return f"SELECT {_ROW_COLUMNS} {joins} {_ORDER} LIMIT {int(limit)}"  # noqa: S608 (constant + scope)

    async def page(self, scope: Scope, filt: CallFilter, *, after: str | None = None,
                   limit: int = 50) -> CallPage:
        """One page of calls, newest first; `after` is the previous page's next_cursor."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        p = Params()
        sql = self._rows_sql(scope, filt, p, after=after, limit=limit + 1)
        records = await self._pool.fetch(sql, *p.values)
        rows = [_row(r) for r in records[:limit]]
        more = len(records) > limit
        return CallPage(rows, encode_cursor(rows[-1].offered_at, rows[-1].id) if more and rows else None)

    async def count(self, scope: Scope, filt: CallFilter, *, cap: int = 10_000) -> int:
        """How many calls match, counted up to `cap` + 1 (a result above `cap` reads "more than
        cap": counting a district's million calls exactly is not worth a page's time)."""
        p = Params()
        matching = self._matching(scope, filt, p, after=None, limit=int(cap) + 1, ordered=False)
        sql = f"SELECT count(*) FROM (SELECT 1 FROM ({matching}) m LIMIT {int(cap) + 1}) n"  # noqa: S608 (constant + scope)
        return await self._pool.fetchval(sql, *p.values)

    async def export_rows(self, scope: Scope, filt: CallFilter,
                          limit: int = EXPORT_LIMIT) -> AsyncIterator[CallRow]:
        """Every matching call, newest first, at most `limit`, streamed (a server-side cursor)."""
        limit = max(1, min(int(limit), EXPORT_LIMIT))
        p = Params()
        sql = self._rows_sql(scope, filt, p, after=None, limit=limit)
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            async for r in conn.cursor(sql, *p.values, prefetch=500):
                yield _row(r)

    async def detail(self, scope: Scope, record_id: int) -> CallDetail | None:
        """The call with its whole story; None when there is no such call or it is out of scope."""
        if isinstance(record_id, bool) or not isinstance(record_id, int) or not 0 < record_id < 2**63:
            return None
        p = Params(record_id)
        sql = (f"SELECT {_ROW_COLUMNS}, c.answered_at, c.route_service, c.route_reason,"  # noqa: S608
               " c.route_explanation, c.end_reason, c.recovery_note, c.keys, c.holds,"
               " c.recording_path, c.recording_seconds, c.recording_sha256, c.answered_by,"
               f" c.voicemail_offset_s {_ROW_JOINS} WHERE c.id = $1 AND ({scope.calls(p, 'c')})")
        async with self._pool.acquire() as conn:
            r = await conn.fetchrow(sql, *p.values)
            if r is None:
                return None
            attempts = [DialAttemptView(a["seq"], a["staff_id"], a["name"], a["sip_uri"], a["started_at"],
                                        a["ended_at"], a["outcome"]) for a in await conn.fetch(
                """SELECT a.seq, a.staff_id, st.name, a.sip_uri, a.started_at, a.ended_at, a.outcome
                   FROM dial_attempts a LEFT JOIN staff st ON st.id = a.staff_id
                   WHERE a.call_record_id = $1 ORDER BY a.seq""", record_id)]
            task = await conn.fetchrow(
                """SELECT t.id, t.status, t.opened_at, t.due_at, v.id AS voicemail_id,
                          v.seconds::float8 AS voicemail_seconds, v.recorded_at
                   FROM callback_calls cc JOIN tasks t ON t.id = cc.task_id
                   LEFT JOIN voicemails v ON v.call_record_id = cc.call_record_id
                   WHERE cc.call_record_id = $1""", record_id)
        row = _row(r)
        keys = json.loads(r["keys"])
        holds = json.loads(r["holds"])
        explanation = json.loads(r["route_explanation"])
        callback = None if task is None else CallbackView(
            task["id"], task["status"], task["opened_at"], task["due_at"], task["voicemail_id"],
            task["voicemail_seconds"])
        recording = None
        if r["recording_path"] is not None:
            on_disk = await asyncio.to_thread(os.path.isfile, r["recording_path"])
            recording = RecordingMeta(
                float(r["recording_seconds"]) if r["recording_seconds"] is not None else None,
                r["recording_sha256"], r["recording_sha256"] is not None, on_disk)
        timeline = _timeline(r, row, attempts, keys, holds, task)
        return CallDetail(row, r["route_service"], r["route_reason"], explanation, r["end_reason"],
                          r["recovery_note"], attempts, keys, holds, timeline, recording, callback)

    async def recording(self, scope: Scope, record_id: int) -> RecordingRef | None:
        """The finished recording of a call in scope; None if none or out of scope."""
        if isinstance(record_id, bool) or not isinstance(record_id, int) or not 0 < record_id < 2**63:
            return None
        p = Params(record_id)
        sql = ("SELECT c.recording_path, c.recording_sha256, c.recording_seconds::float8 AS seconds"  # noqa: S608
               " FROM call_records c WHERE c.id = $1 AND c.recording_sha256 IS NOT NULL"
               f" AND ({scope.calls(p, 'c')})")
        r = await self._pool.fetchrow(sql, *p.values)
        if r is None:
            return None
        return RecordingRef(Path(r["recording_path"]), r["recording_sha256"], r["seconds"])

    async def voicemail(self, scope: Scope, voicemail_id: int) -> RecordingRef | None:
        """A caller's message, when its callback task or its call is in scope."""
        if isinstance(voicemail_id, bool) or not isinstance(voicemail_id, int) or not 0 < voicemail_id < 2**63:
            return None
        p = Params(voicemail_id)
        tasks = scope.tasks(p, "t")
        calls = scope.calls(p, "c")
        sql = ("SELECT v.path, v.sha256, v.seconds::float8 AS seconds FROM voicemails v"  # noqa: S608
               " WHERE v.id = $1 AND ("
               f"EXISTS (SELECT 1 FROM tasks t WHERE t.id = v.task_id AND {tasks})"
               f" OR EXISTS (SELECT 1 FROM call_records c WHERE c.id = v.call_record_id AND {calls}))")
        r = await self._pool.fetchrow(sql, *p.values)
        if r is None:
            return None
        return RecordingRef(Path(r["path"]), r["sha256"], r["seconds"])


# The order of steps that share a timestamp (a clock's resolution, a replayed journal).
_RANK = {k: i for i, k in enumerate((
    "offered", "greeted", "key_pressed", "routed", "ringing", "dial_ended", "connected", "hold",
    "resume", "voicemail", "callback_owed", "ended"))}


def _timeline(r: asyncpg.Record, row: CallRow, attempts: list[DialAttemptView], keys: list[dict[str, Any]],
              holds: list[dict[str, Any]], task: asyncpg.Record | None) -> list[TimelineEvent]:
    events = [TimelineEvent(row.offered_at, "offered", {"caller": row.caller_number_masked, "line": row.line})]
    if r["answered_at"] is not None:
        events.append(TimelineEvent(r["answered_at"], "greeted"))
    menu_keys = []
    for k in keys:
        at = datetime.fromisoformat(k["at"])
        events.append(TimelineEvent(at, "key_pressed", {"key": k.get("key"), "menu": k.get("menu")}))
        if k.get("menu") == "menu":
            menu_keys.append(at)
    if r["route_service"] is not None or r["route_reason"]:
        # The decision's own time is not stored: it is made when the menu is done, before the
        # first phone rings.
        candidates = [a for a in [r["answered_at"], *menu_keys] if a is not None]
        at = max(candidates) if candidates else row.offered_at
        if attempts:
            at = min(at, attempts[0].started_at)
        events.append(TimelineEvent(at, "routed", {"service": r["route_service"], "reason": r["route_reason"]}))
    for a in attempts:
        who = {"seq": a.seq, "staff_id": a.staff_id, "staff_name": a.staff_name}
        events.append(TimelineEvent(a.started_at, "ringing", who))
        if a.ended_at is not None:
            events.append(TimelineEvent(a.ended_at, "dial_ended", {**who, "outcome": a.outcome}))
    if row.connected_at is not None:
        events.append(TimelineEvent(row.connected_at, "connected",
                                    {"staff_id": r["answered_by"], "staff_name": row.answered_by_name}))
    for h in holds:
        events.append(TimelineEvent(datetime.fromisoformat(h["at"]), "hold" if h.get("on") else "resume",
                                    {"side": h.get("side"), "offset_s": h.get("offset_s")}))
    if task is not None and task["voicemail_id"] is not None:
        events.append(TimelineEvent(task["recorded_at"], "voicemail",
                                    {"voicemail_id": task["voicemail_id"], "seconds": task["voicemail_seconds"]}))
    if task is not None:
        # owed when the hunt failed: at the latest when the call ended
        at = row.ended_at or max(e.at for e in events)
        events.append(TimelineEvent(at, "callback_owed", {"task_id": task["id"], "due_at": task["due_at"].isoformat(),
                                                          "status": task["status"]}))
    if row.ended_at is not None:
        events.append(TimelineEvent(row.ended_at, "ended", {"disposition": row.disposition,
                                                            "end_reason": r["end_reason"]}))
    events.sort(key=lambda e: (e.at, _RANK[e.kind]))
    return events
