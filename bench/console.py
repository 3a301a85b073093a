"""The console's queries at district scale: call search, call detail, the desk, the live board.

    .venv/bin/python -m bench.console [--residents 510000] [--calls 1000000] [--days 90] [--seed 1]
        [--samples 30] [--regenerate] [--explain] [--quiet]
    .venv/bin/python -m bench.console --smoke   # seconds: 2 000 residents, 5 000 calls

Issue 10's goals, with 1 000 000 call records and 200 000 callback tasks over the 510 k district:
call search by each filter p95 ≤ 200 ms, call detail p95 ≤ 50 ms, desk page p95 ≤ 100 ms, 100
concurrent board viewers with event-to-screen ≤ 1 s.

The database is HOTLINE_BENCH_DATABASE_URL when set, otherwise the database `hotline_bench_console`
of the private PostgreSQL in the data dir (started if needed, left running; `make stop` stops it).
The first run seeds the synthetic district and generates the calls and callbacks there
(bench/console_data.py: minutes at full size); later runs reuse them (`--regenerate` writes them
again). The bench's PII key is <data dir>/bench/pii.key, as bench.route's. Redis is
HOTLINE_BENCH_REDIS_URL when set, otherwise database 15 of the private Redis.

Measured, each case a fresh random viewer and value (so the figures are not one cached row):
  - call search (recordings.call_search.CallSearch.page, "console"), first page of 50 newest first,
    by each filter of the calls page (date range, center, team, staff who answered, disposition,
    line, resident, caller's number, resident's name), with none, and page 5 by the keyset cursor,
    for a district administrator, a director, a family doctor, a night duty doctor and an agent;
  - call detail (CallSearch.detail), the desk (handover.desk.open_tasks), today's figures
    (recordings.figures.day_figures), a month's report per center by day (recordings.reports.report),
    the caller card (recordings.caller_card.caller_card);
  - the board's feed: 100 viewers subscribed to call events through Redis pub/sub (each its own
    subscription, then one subscription fanned out to 100 queues, as one web node would), the
    time from PUBLISH to each viewer holding the event; then the last leg, `measure_sse_viewers`:
    the console (web.server.console_site) in a process of its own on the bench's database and
    Redis, 100 signed-in sessions of the district's supervisors reading GET /api/v1/board/events
    (aiohttp), call steps published with recordings.live.LiveCalls on calls of the bench database,
    step → each browser's `data:` line, and the console process' CPU meanwhile.
The bench's own SQL ("bench-sql": scope predicate ANDed in, keyset on (offered_at, id)) is
measured beside the console's search for the administrator and the family doctor (and the director
and agent unfiltered and by date): it checks the indexes at size. Not for the duty doctor: her
scope as one OR with EXISTS per call takes seconds at size, which is why CallSearch merges the
scope's arms (routing/scope.py `calls_arms`). --explain prints EXPLAIN (ANALYZE, BUFFERS) of one
case of each bench-sql measure, and of the console's own search query, on stderr. Prints a table; asserts nothing (tests/test_bench_smoke.py
runs --smoke). The last full run's table is in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import inspect
import json
import os
import platform
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog

from bench.console_data import Generated, ensure_data
from hotline.config import Config, load_config
from hotline.logs import configure_logging
from hotline.runtime import all_migrations, ensure_database
from routing.scope import Params, Scope, Viewer
from store import db, embedded
from store.migrate import migrate
from store.pii import PiiVault, load_or_create_key

# The console's functions, written in parallel with this bench: measured when they are there.
try:
    from recordings.call_search import CallFilter, CallSearch  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on what is merged
    CallSearch = CallFilter = None
try:
    from handover.desk import open_tasks  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    open_tasks = None
try:
    from recordings import live as live_module  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    live_module = None
from recordings.caller_card import caller_card
from recordings.figures import day_figures
from recordings.reports import report

log = structlog.get_logger("bench.console")

BENCH_DATABASE = "hotline_bench_console"
BENCH_REDIS_DB = 15
# figures / report / card: no goal in the issue; the bench's own (the board's figures refresh with
# the board, a report is a page asked for now and then, the card pops within 1 s of the ring).
GOAL_MS = {"search": 200.0, "detail": 50.0, "desk": 100.0, "board": 1000.0,
           "figures": 1000.0, "report": 2000.0, "card": 500.0}
PAGE = 50
SAMPLES = 30          # cases per measure (each a fresh viewer / value)
MEASURE_BUDGET_S = 20.0  # a measure stops early past this (at least MIN_SAMPLES): a slow plan is slow
MIN_SAMPLES = 5
WARM_UP = 3
BOARD_VIEWERS = 100
BOARD_EVENTS = 100
BOARD_RATE = 20.0     # events/s: a busy district's call events (offered, rung, answered, ended)
BOARD_CHANNEL = "hotline:board:bench"
ONLY: re.Pattern[str] | None = None  # --only: the measures whose "measure role" matches


def wanted(measure: str, role: str) -> bool:
    return ONLY is None or bool(ONLY.search(f"{measure} {role}"))
SMOKE = {"SAMPLES": 3, "MEASURE_BUDGET_S": 0.5, "MIN_SAMPLES": 1, "WARM_UP": 1,
         "BOARD_VIEWERS": 10, "BOARD_EVENTS": 10, "BOARD_RATE": 100.0, "SSE_CALLS": 3}
SMOKE_RESIDENTS, SMOKE_CALLS, SMOKE_SEED, SMOKE_DAYS = 2_000, 5_000, 9_002, 14


@dataclass
class Result:
    measure: str
    role: str
    impl: str
    latencies_ms: list[float]
    rows: list[int]
    goal: str  # key of GOAL_MS
    note: str = ""

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")

    @property
    def verdict(self) -> str:
        if not self.latencies_ms:
            return "—"
        return "met" if self.p(95) <= GOAL_MS[self.goal] else "NOT met"


# --- the database ------------------------------------------------------------------------------

async def bench_database_url(config: Config) -> str:
    if url := os.environ.get("HOTLINE_BENCH_DATABASE_URL"):
        return url
    return await ensure_database(embedded.ensure_postgres(config.data_dir), BENCH_DATABASE)


@dataclass
class District:
    """Viewers and values to search by, sampled from the generated data."""

    id: int
    viewers: dict[str, list[Viewer]]
    centers: list[int]
    lines: list[str]
    first_day: date
    last_day: date
    # per team: residents of the team who called (id, name, number hash); staff who answered
    team_callers: dict[int, list[tuple[int, str, bytes]]]
    callers: list[tuple[int, str, bytes]]
    answerers: list[int]
    team_staff: dict[int, list[int]]
    call_ids: list[int]
    team_call_ids: dict[int, list[int]]


async def load_district(pool: asyncpg.Pool, data: Generated, tz: Any, rng: random.Random) -> District:
    d = data.district_id
    viewers: dict[str, list[Viewer]] = {}
    for r in await pool.fetch("SELECT id, staff_no, name, role, district_id, center_id, team_id FROM staff"
                              " WHERE district_id = $1 ORDER BY id", d):
        viewers.setdefault(r["role"], []).append(Viewer(r["id"], r["staff_no"], r["name"], r["role"],
                                                        r["district_id"], r["center_id"], r["team_id"]))
    team_staff: dict[int, list[int]] = {}
    for v in viewers.get("family_doctor", []) + viewers.get("assistant", []):
        team_staff.setdefault(v.team_id or 0, []).append(v.staff_id)
    # a sample of calls with a resident: who called (for the resident / number / name filters)
    sample = await pool.fetch(
        "SELECT c.id, c.team_id, c.resident_id, r.name, c.caller_number_hash, c.answered_by"
        " FROM call_records c TABLESAMPLE SYSTEM (2) JOIN residents r ON r.id = c.resident_id"
        " WHERE c.district_id = $1 LIMIT 20000", d)
    if len(sample) < 200:  # small data: TABLESAMPLE may give nothing
        sample = await pool.fetch(
            "SELECT c.id, c.team_id, c.resident_id, r.name, c.caller_number_hash, c.answered_by"
            " FROM call_records c JOIN residents r ON r.id = c.resident_id WHERE c.district_id = $1"
            " ORDER BY random() LIMIT 20000", d)
    team_callers: dict[int, list[tuple[int, str, bytes]]] = {}
    team_call_ids: dict[int, list[int]] = {}
    for r in sample:
        if r["team_id"]:
            team_callers.setdefault(r["team_id"], []).append((r["resident_id"], r["name"], r["caller_number_hash"]))
            team_call_ids.setdefault(r["team_id"], []).append(r["id"])
    call_ids = [r["id"] for r in await pool.fetch(
        "SELECT id FROM call_records TABLESAMPLE SYSTEM (1) WHERE district_id = $1 LIMIT 5000", d)] or \
        [r["id"] for r in await pool.fetch("SELECT id FROM call_records WHERE district_id = $1"
                                           " ORDER BY random() LIMIT 5000", d)]
    return District(
        d, viewers,
        [r["id"] for r in await pool.fetch("SELECT id FROM centers WHERE district_id = $1", d)],
        [r["number"] for r in await pool.fetch("SELECT number FROM hotline_lines WHERE district_id = $1"
                                               " ORDER BY center_id NULLS FIRST", d)],
        data.first_at.astimezone(tz).date(), data.last_at.astimezone(tz).date(),
        team_callers, [(r["resident_id"], r["name"], r["caller_number_hash"]) for r in sample],
        sorted({r["answered_by"] for r in sample if r["answered_by"]}), team_staff, call_ids, team_call_ids)


# --- what is searched ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filter:
    """One search of the calls page, in the bench's words (mapped onto CallFilter when it exists)."""

    since: datetime | None = None
    until: datetime | None = None
    center_id: int | None = None
    team_id: int | None = None
    staff_id: int | None = None
    disposition: str | None = None
    line: str | None = None
    resident_id: int | None = None
    caller_number_hash: bytes | None = None
    caller_number: str | None = None  # for CallFilter; the bench SQL uses the hash
    resident_name: str | None = None


FILTERS = ("none", "date range (7 days)", "center", "team", "staff (answered by)", "disposition",
           "disposition failed (1 %)", "line (center line, 10 %)", "resident", "caller number",
           "resident name", "date range (1 day), page 5 (keyset)")
OTHER_ROLE_FILTERS = ("none", "date range (7 days)")
SEARCH_ROLES = ("district_admin", "director", "family_doctor", "night_doctor", "agent")


def make_filter(kind: str, viewer: Viewer, dist: District, rng: random.Random, tz: Any,
                numbers: dict[bytes, str]) -> Filter:
    """A case of `kind` as this viewer would search: a team member searches her own team's
    callers, a district administrator anyone's."""
    team = viewer.team_id
    callers = dist.team_callers.get(team, []) if team and viewer.role != "district_admin" else dist.callers
    callers = callers or dist.callers
    days = (dist.last_day - dist.first_day).days

    def day_range(n: int) -> tuple[datetime, datetime]:
        start = dist.first_day + timedelta(days=rng.randrange(max(1, days - n)))
        since = datetime.combine(start, datetime.min.time(), tz)
        return since, since + timedelta(days=n)

    if kind == "none":
        return Filter()
    if kind.startswith("date range"):
        since, until = day_range(1 if "1 day" in kind else 7)
        return Filter(since=since, until=until)
    if kind == "center":
        return Filter(center_id=viewer.center_id if viewer.center_id and viewer.role != "district_admin"
                      else rng.choice(dist.centers))
    if kind == "team":
        return Filter(team_id=team if team and viewer.role != "district_admin"
                      else rng.choice([t for t in dist.team_staff if t]))
    if kind == "staff (answered by)":
        if team and viewer.role != "district_admin":
            return Filter(staff_id=rng.choice(dist.team_staff[team]))
        return Filter(staff_id=rng.choice(dist.answerers))
    if kind == "disposition":
        return Filter(disposition=rng.choice(("connected", "missed", "abandoned", "ivr_only")))
    if kind.startswith("disposition failed"):
        return Filter(disposition="failed")
    if kind.startswith("line"):
        return Filter(line=dist.lines[-1])
    resident_id, name, number_hash = rng.choice(callers)
    if kind == "resident":
        return Filter(resident_id=resident_id)
    if kind == "caller number":
        return Filter(caller_number_hash=number_hash, caller_number=numbers.get(number_hash))
    if kind == "resident name":
        return Filter(resident_name=name)
    raise ValueError(kind)


def bench_page_sql(scope: Scope, f: Filter, after: tuple[datetime, int] | None,
                   limit: int) -> tuple[str, list[Any]]:
    """The call list as recordings/call_search.py must query it: scope AND filters, newest
    first, keyset on (offered_at, id)."""
    p = Params()
    where = [scope.calls(p, "c")]
    if f.since:
        where.append(f"c.offered_at >= {p.add(f.since)}")
    if f.until:
        where.append(f"c.offered_at < {p.add(f.until)}")
    for column in ("center_id", "team_id", "disposition", "line", "resident_id"):
        if (value := getattr(f, column)) is not None:
            where.append(f"c.{column} = {p.add(value)}")
    if f.staff_id is not None:
        where.append(f"c.answered_by = {p.add(f.staff_id)}")
    if f.caller_number_hash is not None:
        where.append(f"c.caller_number_hash = {p.add(f.caller_number_hash)}")
    if f.resident_name is not None:
        where.append(f"c.resident_id IN (SELECT rn.id FROM residents rn WHERE rn.name = {p.add(f.resident_name)})")  # noqa: S608
    if after is not None:
        where.append(f"(c.offered_at, c.id) < ({p.add(after[0])}, {p.add(after[1])})")
    # only scope fragments and constant SQL are interpolated; every value is a $n
    sql = ("SELECT c.id, c.offered_at, c.caller_number_masked, c.disposition, c.line, c.route_service,"  # noqa: S608
           " c.connected_at, c.ended_at, c.recording_seconds, r.name AS resident_name,"
           " ce.name AS center_name, t.name AS team_name, s.name AS answered_by_name"
           " FROM call_records c LEFT JOIN residents r ON r.id = c.resident_id"
           " LEFT JOIN centers ce ON ce.id = c.center_id LEFT JOIN teams t ON t.id = c.team_id"
           " LEFT JOIN staff s ON s.id = c.answered_by"
           f" WHERE {' AND '.join(where)}"
           f" ORDER BY c.offered_at DESC, c.id DESC LIMIT {int(limit)}")
    return sql, p.values


DETAIL_SQL = (
    ("SELECT c.*, r.name AS resident_name, r.id_number_masked, s.name AS answered_by_name"
     " FROM call_records c LEFT JOIN residents r ON r.id = c.resident_id"
     " LEFT JOIN staff s ON s.id = c.answered_by WHERE c.id = {id} AND {scope}"),
    ("SELECT a.seq, a.staff_id, s.name, a.sip_uri, a.started_at, a.ended_at, a.outcome"
     " FROM dial_attempts a LEFT JOIN staff s ON s.id = a.staff_id WHERE a.call_record_id = $1 ORDER BY a.seq"),
    ("SELECT t.id, t.status, t.opened_at, t.due_at, t.closed_at, t.owner_staff_id FROM callback_calls cc"
     " JOIN tasks t ON t.id = cc.task_id WHERE cc.call_record_id = $1"),
    ("SELECT v.id, v.seconds, v.recorded_at, v.sha256 FROM voicemails v WHERE v.call_record_id = $1"),
)


async def bench_detail(pool: asyncpg.Pool, scope: Scope, record_id: int) -> int:
    """The call's page: None (0) when out of scope, else the rows read."""
    p = Params(record_id)
    head = DETAIL_SQL[0].format(id="$1", scope=scope.calls(p, "c"))
    async with pool.acquire() as conn:
        record = await conn.fetchrow(head, *p.values)
        if record is None:
            return 0
        rows = 1
        for sql in DETAIL_SQL[1:]:
            rows += len(await conn.fetch(sql, record_id))
    return rows


def bench_desk_sql(scope: Scope, now: datetime) -> tuple[str, list[Any]]:
    """The desk: the open tasks of the viewer's scope, due soonest first, each with its missed
    calls and voicemails."""
    p = Params()
    pred = scope.tasks(p, "t")
    # only the scope fragment is interpolated; every value is a $n
    sql = ("SELECT t.id, t.caller_number_masked, t.resident_id, r.name, t.owner_staff_id, t.opened_at, t.due_at,"  # noqa: S608
           f" t.due_at - {p.add(now)}::timestamptz AS left,"
           " (SELECT json_agg(json_build_object('id', c.id, 'offered_at', c.offered_at,"
           "   'disposition', c.disposition) ORDER BY c.offered_at)"
           "   FROM callback_calls cc JOIN call_records c ON c.id = cc.call_record_id WHERE cc.task_id = t.id) AS calls,"
           " (SELECT json_agg(json_build_object('id', v.id, 'seconds', v.seconds) ORDER BY v.recorded_at)"
           "   FROM voicemails v WHERE v.task_id = t.id) AS voicemails"
           " FROM tasks t LEFT JOIN residents r ON r.id = t.resident_id"
           f" WHERE t.status = 'open' AND {pred}"
           " ORDER BY t.due_at, t.id LIMIT 500")
    return sql, p.values


# --- the console's own functions, when merged ---------------------------------------------------

def console_filter(f: Filter) -> Any | None:
    """The case as a recordings.call_search.CallFilter, by its field names; None when CallFilter
    lacks a field this case needs (the measure then says so)."""
    if CallFilter is None:
        return None
    try:
        names = {x.name for x in dataclasses.fields(CallFilter)}
    except TypeError:
        names = set(inspect.signature(CallFilter).parameters)
    aliases = {"since": ("since", "date_from", "from_date", "start", "starts"),
               "until": ("until", "date_to", "to_date", "end", "ends"),
               "staff_id": ("staff_id", "answered_by"),
               "caller_number": ("caller_number", "phone", "number"),
               "resident_name": ("resident_name", "name")}
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(Filter):
        value = getattr(f, field.name)
        if value is None or field.name == "caller_number_hash":
            continue
        target = next((a for a in aliases.get(field.name, (field.name,)) if a in names), None)
        if target is None:
            return None
        kwargs[target] = value
    return CallFilter(**kwargs)


# --- measuring -------------------------------------------------------------------------------------

async def timed(run: Callable[[], Awaitable[int]]) -> tuple[float, int]:
    t = time.perf_counter_ns()
    rows = await run()
    return (time.perf_counter_ns() - t) / 1e6, rows


async def measure(name: str, role: str, impl: str, goal: str,
                  cases: Callable[[int], Callable[[], Awaitable[int]]], note: str = "") -> Result:
    """Up to SAMPLES cases (case(k) gives the k-th query), after WARM_UP unrecorded ones; stops
    early past MEASURE_BUDGET_S."""
    for k in range(WARM_UP):
        await cases(-1 - k)()
    result = Result(name, role, impl, [], [], goal, note)
    started = time.perf_counter()
    for k in range(SAMPLES):
        ms, rows = await timed(cases(k))
        result.latencies_ms.append(ms)
        result.rows.append(rows)
        if MIN_SAMPLES <= k + 1 < SAMPLES and time.perf_counter() - started > MEASURE_BUDGET_S:
            result.note = (result.note + "; " if result.note else "") + f"stopped after {k + 1} (budget)"
            break
    log.info("bench.console.measured", measure=name, role=role, impl=impl,
             p95_ms=round(result.p(95), 1), n=len(result.latencies_ms))
    return result


async def explain(pool: asyncpg.Pool, title: str, sql: str, values: Sequence[Any]) -> None:
    plan = await pool.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *values)
    print(f"\n--- EXPLAIN {title}\n" + "\n".join(r[0] for r in plan), file=sys.stderr)


async def measure_search(pool: asyncpg.Pool, vault: PiiVault, dist: District, tz: Any,
                         rng: random.Random, numbers: dict[bytes, str], do_explain: bool) -> list[Result]:
    results: list[Result] = []
    search = CallSearch(pool, vault) if CallSearch is not None else None
    sql_plan = {(role, kind) for role in ("district_admin", "family_doctor") for kind in FILTERS}
    # (the duty doctor's scope as one OR with EXISTS per call takes seconds at size: the bench's
    # SQL is the plain OR, so only the console's merge of the scope's arms is measured for her)
    sql_plan |= {(role, kind) for role in ("director", "agent") for kind in OTHER_ROLE_FILTERS}
    plan = [(role, kind) for role in SEARCH_ROLES for kind in FILTERS]
    for role, kind in plan:
        viewers = dist.viewers.get(role, [])
        if not viewers or not wanted(f"search: {kind}", role):
            continue
        keyset = "keyset" in kind
        picks = {k: (v := rng.choice(viewers), make_filter(kind, v, dist, rng, tz, numbers))
                 for k in range(-WARM_UP, SAMPLES)}

        async def first_cursor(scope: Scope, f: Filter) -> tuple[datetime, int] | None:
            """Where page 5 starts: the 200th row (not timed)."""
            sql, values = bench_page_sql(scope, f, None, 4 * PAGE)
            rows = await pool.fetch(sql, *values)
            return (rows[-1]["offered_at"], rows[-1]["id"]) if len(rows) == 4 * PAGE else None

        cursors = {}
        if keyset and (role, kind) in sql_plan:
            for k, (v, f) in picks.items():
                cursors[k] = await first_cursor(Scope(v), f)

        def sql_case(k: int, picks=picks, cursors=cursors) -> Callable[[], Awaitable[int]]:
            viewer, f = picks[k]
            sql, values = bench_page_sql(Scope(viewer), f, cursors.get(k), PAGE)

            async def run() -> int:
                return len(await pool.fetch(sql, *values))
            return run

        if (role, kind) in sql_plan:
            results.append(await measure(f"search: {kind}", role, "bench-sql", "search", sql_case))
            if do_explain:
                viewer, f = picks[0]
                await explain(pool, f"search: {kind} — {role}",
                              *bench_page_sql(Scope(viewer), f, cursors.get(0), PAGE))
        if search is not None:
            if console_filter(picks[0][1]) is None:
                results.append(Result(f"search: {kind}", role, "console", [], [], "search",
                                      "not measured: CallFilter lacks this filter"))
                continue
            console_cursors: dict[int, str | None] = {}
            if keyset:  # where page 5 starts, as the console's own cursor (not timed)
                for k, (v, f) in picks.items():
                    after = None
                    for _ in range(4):
                        after = (await search.page(Scope(v), console_filter(f), after=after, limit=PAGE)).next_cursor
                        if after is None:
                            break
                    console_cursors[k] = after

            def console_case(k: int, picks=picks, console_cursors=console_cursors) -> Callable[[], Awaitable[int]]:
                viewer, f = picks[k]

                async def run() -> int:
                    page = await search.page(Scope(viewer), console_filter(f), after=console_cursors.get(k),
                                             limit=PAGE)
                    return len(page.rows)
                return run
            results.append(await measure(f"search: {kind}", role, "console", "search", console_case))
            if do_explain:  # the console's own query of the first case, as CallSearch.page sends it
                viewer, f = picks[0]
                p = Params()
                sql = search._rows_sql(Scope(viewer), console_filter(f), p, after=console_cursors.get(0),
                                       limit=PAGE + 1)
                await explain(pool, f"search: {kind} — {role} (console)", sql, p.values)
    return results


async def measure_detail(pool: asyncpg.Pool, vault: PiiVault, dist: District, rng: random.Random,
                         do_explain: bool) -> list[Result]:
    results: list[Result] = []
    search = CallSearch(pool, vault) if CallSearch is not None else None
    for role in ("district_admin", "family_doctor"):
        viewers = dist.viewers.get(role, [])
        if not viewers or not wanted("call detail", role):
            continue
        picks = {}
        for k in range(-WARM_UP, SAMPLES):
            v = rng.choice(viewers)
            ids = dist.call_ids if role == "district_admin" else dist.team_call_ids.get(v.team_id or 0) or dist.call_ids
            picks[k] = (v, rng.choice(ids))

        def sql_case(k: int, picks=picks) -> Callable[[], Awaitable[int]]:
            viewer, record_id = picks[k]
            return lambda: bench_detail(pool, Scope(viewer), record_id)
        results.append(await measure("call detail", role, "bench-sql", "detail", sql_case))
        if do_explain:
            viewer, record_id = picks[0]
            p = Params(record_id)
            await explain(pool, f"call detail — {role}",
                          DETAIL_SQL[0].format(id="$1", scope=Scope(viewer).calls(p, "c")), p.values)
        if search is not None:
            def console_case(k: int, picks=picks) -> Callable[[], Awaitable[int]]:
                viewer, record_id = picks[k]

                async def run() -> int:
                    return int(await search.detail(Scope(viewer), record_id) is not None)
                return run
            results.append(await measure("call detail", role, "console", "detail", console_case))
    return results


async def measure_desk(pool: asyncpg.Pool, dist: District, rng: random.Random, do_explain: bool) -> list[Result]:
    results: list[Result] = []
    now = datetime.now(UTC)
    for role in ("family_doctor", "agent"):
        viewers = dist.viewers.get(role, [])
        if not viewers or not wanted("desk: open tasks", role):
            continue
        picks = {k: rng.choice(viewers) for k in range(-WARM_UP, SAMPLES)}

        def sql_case(k: int, picks=picks) -> Callable[[], Awaitable[int]]:
            sql, values = bench_desk_sql(Scope(picks[k]), now)

            async def run() -> int:
                return len(await pool.fetch(sql, *values))
            return run
        results.append(await measure("desk: open tasks", role, "bench-sql", "desk", sql_case))
        if do_explain:
            await explain(pool, f"desk — {role}", *bench_desk_sql(Scope(picks[0]), now))
        if open_tasks is not None:
            def console_case(k: int, picks=picks) -> Callable[[], Awaitable[int]]:
                async def run() -> int:
                    return len(await open_tasks(pool, Scope(picks[k]), now=now))
                return run
            results.append(await measure("desk: open tasks", role, "console", "desk", console_case))
    return results


async def measure_views(pool: asyncpg.Pool, vault: PiiVault, dist: District, tz: Any,
                        rng: random.Random) -> list[Result]:
    """Today's figures (the board's), a month's report per center, the caller card (screen-pop):
    the console's own functions."""
    results: list[Result] = []
    now = datetime.combine(dist.last_day, datetime.min.time(), tz) + timedelta(hours=18)
    for role in ("district_admin", "director", "night_doctor", "agent"):
        viewers = dist.viewers.get(role, [])
        if not viewers or not wanted("figures: today", role):
            continue
        picks = {k: rng.choice(viewers) for k in range(-WARM_UP, SAMPLES)}

        def figures_case(k: int, picks=picks) -> Callable[[], Awaitable[int]]:
            async def run() -> int:
                figures = await day_figures(pool, Scope(picks[k]), dist.last_day, now=now, tz=tz)
                return len(getattr(figures, "centers", ()) or ()) + 1
            return run
        results.append(await measure("figures: today", role, "console", "figures", figures_case))
    month_end = dist.last_day
    month_start = month_end - timedelta(days=30)
    for role in ("district_admin", "director"):
        viewers = dist.viewers.get(role, [])
        if not viewers or not wanted("report: a month per center", role):
            continue
        picks = {k: rng.choice(viewers) for k in range(-WARM_UP, SAMPLES)}

        def report_case(k: int, picks=picks) -> Callable[[], Awaitable[int]]:
            async def run() -> int:
                return len(await report(pool, Scope(picks[k]), level="center", period="day",
                                        since=month_start, until=month_end, tz=tz, now=now))
            return run
        results.append(await measure("report: a month per center, by day", role, "console", "report",
                                     report_case))
    for role in ("family_doctor", "district_admin"):
        viewers = dist.viewers.get(role, [])
        if not viewers or not wanted("caller card", role):
            continue
        card_picks = {}
        for k in range(-WARM_UP, SAMPLES):
            v = rng.choice(viewers)
            ids = dist.team_call_ids.get(v.team_id or 0) or dist.call_ids
            card_picks[k] = (v, rng.choice(ids))

        def card_case(k: int, picks=card_picks) -> Callable[[], Awaitable[int]]:
            viewer, record_id = picks[k]

            async def run() -> int:
                return int(await caller_card(pool, vault, Scope(viewer), record_id, now=now, tz=tz) is not None)
            return run
        results.append(await measure("caller card (screen-pop)", role, "console", "card", card_case))
    return results


# --- the board ------------------------------------------------------------------------------------

def board_event(n: int) -> bytes:
    """A call event as the board receives one (sent time inside, for the latency)."""
    return json.dumps({"type": "call.connected", "seq": n, "sent_ns": time.time_ns(),
                       "call": {"id": 1_000_000 + n, "line": "9000010", "caller": "138****5678",
                                "center_id": 3, "staff": {"id": 42, "name": "王医生"},
                                "offered_at": datetime.now(UTC).isoformat()}},
                      ensure_ascii=False).encode()


async def publish_events(redis: aioredis.Redis, channel: str) -> None:
    """BOARD_EVENTS events at BOARD_RATE per second (the viewers subscribed before)."""
    for n in range(BOARD_EVENTS):
        await redis.publish(channel, board_event(n))
        await asyncio.sleep(1 / BOARD_RATE)


async def board_own_subscriptions(redis_url: str, channel: str) -> Result:
    """BOARD_VIEWERS subscriptions of their own (a web node per viewer, at worst)."""
    latencies: list[float] = []
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(BOARD_VIEWERS)]
    subs = [c.pubsub() for c in clients]
    for s in subs:
        await s.subscribe(channel)
    received = [0] * BOARD_VIEWERS

    async def viewer(k: int) -> None:
        quiet_until = time.monotonic() + 5  # lost events show as a short count
        while received[k] < BOARD_EVENTS and time.monotonic() < quiet_until:
            msg = await subs[k].get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is None:  # nothing yet, or the subscription's confirmation
                continue
            quiet_until = time.monotonic() + 5
            latencies.append((time.time_ns() - json.loads(msg["data"])["sent_ns"]) / 1e6)
            received[k] += 1

    publisher = aioredis.Redis.from_url(redis_url)
    try:
        tasks = [asyncio.create_task(viewer(k)) for k in range(BOARD_VIEWERS)]
        await publish_events(publisher, channel)
        await asyncio.gather(*tasks)
    finally:
        for s in subs:
            await s.aclose()
        for c in clients:
            await c.aclose()
        await publisher.aclose()
    got = len(latencies)
    return Result(f"board: {BOARD_VIEWERS} viewers, own subscriptions", "—", "redis", latencies, [got], "board",
                  f"{got:,} of {BOARD_VIEWERS * BOARD_EVENTS:,} deliveries")


async def board_fan_out(redis_url: str, channel: str) -> Result:
    """One subscription per web node, fanned out to BOARD_VIEWERS queues (one per SSE stream)."""
    latencies: list[float] = []
    queues: list[asyncio.Queue[bytes]] = [asyncio.Queue() for _ in range(BOARD_VIEWERS)]
    client = aioredis.Redis.from_url(redis_url)
    sub = client.pubsub()
    await sub.subscribe(channel)

    async def pump() -> None:
        got, quiet_until = 0, time.monotonic() + 5
        while got < BOARD_EVENTS and time.monotonic() < quiet_until:
            msg = await sub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is None:  # nothing yet, or the subscription's confirmation
                continue
            got, quiet_until = got + 1, time.monotonic() + 5
            for q in queues:
                q.put_nowait(msg["data"])
        for q in queues:
            q.put_nowait(b"")

    async def viewer(q: asyncio.Queue[bytes]) -> None:
        while data := await q.get():
            # what an SSE handler does with it before writing: parse, render the line
            event = json.loads(data)
            _ = f"event: call\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()
            latencies.append((time.time_ns() - event["sent_ns"]) / 1e6)

    publisher = aioredis.Redis.from_url(redis_url)
    try:
        tasks = [asyncio.create_task(pump())] + [asyncio.create_task(viewer(q)) for q in queues]
        await publish_events(publisher, channel)
        await asyncio.gather(*tasks)
    finally:
        await sub.aclose()
        await client.aclose()
        await publisher.aclose()
    got = len(latencies)
    return Result(f"board: {BOARD_VIEWERS} viewers, 1 subscription fanned out", "—", "redis", latencies, [got],
                  "board", f"{got:,} of {BOARD_VIEWERS * BOARD_EVENTS:,} deliveries")


SSE_CALLS = 25        # calls whose four steps (offered, ringing, answered, ended) are published


def _cpu_seconds(pid: int) -> float:
    """user + system CPU of a process so far (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def serve_console() -> None:
    """The console on the bench's database and Redis, in a process of its own (its CPU measured
    alone): prints `port N`, serves until its standard input closes."""
    from web.server import console_site

    config = load_config()
    configure_logging("console", "warning", sys.stderr)
    url, redis_url = os.environ["BENCH_CONSOLE_DB"], os.environ["BENCH_CONSOLE_REDIS"]
    vault = PiiVault.from_base64(load_or_create_key("", config.data_dir / "bench"))
    pool = await db.create_pool(url, min_size=2, max_size=10)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with console_site(pool=pool, redis=redis, vault=vault, tz=config.tz, now=lambda: datetime.now(UTC),
                                host="127.0.0.1", port=0, redis_url=redis_url) as site:
            print(f"port {site.port}", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await redis.aclose()
        await pool.close()


async def measure_sse_viewers(url: str, redis_url: str, dist: District, rng: random.Random) -> Result:
    """BOARD_VIEWERS signed-in browsers on the live board's event stream (GET
    /api/v1/board/events of a console in a process of its own), event-to-screen: call steps
    published through recordings.live.LiveCalls as a service node does, on calls of the bench
    database in the viewers' scope (supervisors and administrators of the district: every
    viewer gets every event), timed from the step's call to each client reading its `data:`
    line. The console process' CPU over the run is noted."""
    import aiohttp

    from recordings.live import LiveCalls
    from web.app import SESSION_COOKIE
    from web.sessions import SessionStore

    staff = dist.viewers.get("supervisor", []) + dist.viewers.get("district_admin", [])
    if not staff or not dist.call_ids:
        return Result("board: SSE to browsers", "—", "console", [], [], "board", "no board viewer in the data")
    env = {**os.environ, "BENCH_CONSOLE_DB": url, "BENCH_CONSOLE_REDIS": redis_url}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.console", "--serve-console",
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                env=env)
    redis = aioredis.Redis.from_url(redis_url)
    latencies: list[float] = []
    sent: dict[tuple[str, str], float] = {}
    expected = SSE_CALLS * 4
    got = [0] * BOARD_VIEWERS
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if not line.startswith("port "):
            raise RuntimeError(f"the console did not start: {line!r}")
        base = f"http://127.0.0.1:{int(line.split()[1])}"
        sessions = SessionStore(redis)
        tokens = [(await sessions.create(staff[k % len(staff)].staff_id))[0] for k in range(BOARD_VIEWERS)]
        ready = [asyncio.Event() for _ in range(BOARD_VIEWERS)]
        done = asyncio.Event()

        async def viewer(k: int, http: aiohttp.ClientSession) -> None:
            headers = {"Cookie": f"{SESSION_COOKIE}={tokens[k]}", "Accept": "text/event-stream"}
            async with http.get(f"{base}/api/v1/board/events", headers=headers) as response:
                if response.status != 200:
                    raise RuntimeError(f"board events: HTTP {response.status}")
                kind = ""
                async for raw in response.content:
                    text = raw.decode().rstrip("\n")
                    if text.startswith("event: "):
                        kind = text[7:]
                    elif text.startswith("data: ") and kind == "hello":
                        ready[k].set()
                    elif text.startswith("data: ") and kind == "call":
                        event = json.loads(text[6:])
                        at = sent.get((event.get("call_id"), event.get("type")))
                        if at is not None:
                            latencies.append((time.perf_counter() - at) * 1000)
                            got[k] += 1
                            if got[k] >= expected:
                                return
                    if done.is_set():
                        return

        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            readers = [asyncio.create_task(viewer(k, http)) for k in range(BOARD_VIEWERS)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 30)
            live = LiveCalls(redis, node="bench")
            records = rng.sample(dist.call_ids, min(SSE_CALLS, len(dist.call_ids)))
            cpu0, wall0 = _cpu_seconds(proc.pid), time.perf_counter()
            steps: list[tuple[str, Callable[[str], None]]] = []
            for n, record_id in enumerate(records):
                call_id = f"bench-sse-{os.getpid()}-{n}"
                staff_id = rng.choice(staff).staff_id
                steps += [("offered", lambda c, r=record_id: live.offered(
                               c, record_id=r, line="bench", caller_masked="138****0000",
                               district_id=dist.id)),
                          ("ringing", lambda c, s=staff_id: live.ringing(c, [s])),
                          ("answered", lambda c, s=staff_id: live.answered(c, s)),
                          ("ended", lambda c: live.ended(c, "connected"))]
            for i in range(len(steps)):  # one call after another, each's steps in order
                kind, step = steps[i]
                call_id = f"bench-sse-{os.getpid()}-{i // 4}"
                sent[(call_id, kind)] = time.perf_counter()
                step(call_id)
                await asyncio.sleep(1 / BOARD_RATE)
            await live.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 5)
            wall, cpu = time.perf_counter() - wall0, _cpu_seconds(proc.pid) - cpu0
            done.set()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await live.aclose()
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.terminate()
            await proc.wait()
        await redis.aclose()
    n = len(latencies)
    return Result(f"board: {BOARD_VIEWERS} browsers' SSE streams (console process)", "supervisor", "console",
                  latencies, [n], "board",
                  f"{n:,} of {BOARD_VIEWERS * expected:,} deliveries; console CPU {100 * cpu / wall:.0f} % of a core"
                  f" over {wall:.1f} s")


async def measure_board(redis_url: str) -> list[Result]:
    channel = getattr(live_module, "CHANNEL", None) or BOARD_CHANNEL
    channel = f"{channel}:bench"  # never the service's own channel: its boards would show the bench
    return [await board_own_subscriptions(redis_url, channel), await board_fan_out(redis_url, channel)]


# --- the report -----------------------------------------------------------------------------------

def print_table(results: Sequence[Result], header: Sequence[str], footer: Sequence[str]) -> None:
    for line in header:
        print(line)
    print()
    print("| measure | role | impl | n | p50 ms | p95 ms | max ms | rows | goal p95 | verdict |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        n = len(r.latencies_ms)
        rows = f"{sorted(r.rows)[len(r.rows) // 2]:,}" if r.rows else ""
        if n:
            figures = f"{r.p(50):,.1f} | {r.p(95):,.1f} | {max(r.latencies_ms):,.1f}"
        else:
            figures = " | | "
        verdict = r.verdict + (f" ({r.note})" if r.note else "")
        print(f"| {r.measure} | {r.role} | {r.impl} | {n} | {figures} | {rows} | "
              f"{GOAL_MS[r.goal]:g} ms | {verdict} |")
    print()
    for line in footer:
        print(line)


async def numbers_of(pool: asyncpg.Pool, vault: PiiVault, dist: District) -> dict[bytes, str]:
    """Clear numbers of the sampled callers (the console's search takes what is typed)."""
    hashes = list({h for _, _, h in dist.callers})[:5000]
    rows = await pool.fetch("SELECT DISTINCT ON (phone_hash) phone_hash, phone_enc FROM resident_phones"
                            " WHERE phone_hash = ANY($1::bytea[])", hashes)
    return {r["phone_hash"]: vault.decrypt("phone", r["phone_enc"]) for r in rows}


async def run(args: argparse.Namespace) -> None:
    run_started = time.perf_counter()
    config = load_config()
    configure_logging("console", "warning" if args.quiet else "info", sys.stderr)
    url = await bench_database_url(config)
    vault = PiiVault.from_base64(load_or_create_key("", config.data_dir / "bench"))
    async with db.connection(url) as conn:
        await migrate(conn, all_migrations())
    given_redis = os.environ.get("HOTLINE_BENCH_REDIS_URL")
    redis_url = given_redis or f"{embedded.ensure_redis(config.data_dir)}?db={BENCH_REDIS_DB}"
    pool = await db.create_pool(url, min_size=2, max_size=4)
    try:
        data = await ensure_data(pool, vault, residents=args.residents, seed=args.seed, calls=args.calls,
                                 days=args.days, tz=config.tz, regenerate=args.regenerate)
        rng = random.Random(args.seed)
        dist = await load_district(pool, data, config.tz, rng)
        numbers = await numbers_of(pool, vault, dist)
        results = await measure_search(pool, vault, dist, config.tz, rng, numbers, args.explain)
        results += await measure_detail(pool, vault, dist, rng, args.explain)
        results += await measure_desk(pool, dist, rng, args.explain)
        results += await measure_views(pool, vault, dist, config.tz, rng)
        if wanted("board", "—"):
            results += await measure_board(redis_url)
            results.append(await measure_sse_viewers(url, redis_url, dist, rng))
        server = await pool.fetchval("SHOW server_version")
        size = await pool.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        tables = await pool.fetchval(
            "SELECT string_agg(relname || ' ' || pg_size_pretty(pg_total_relation_size(oid)), ', '"
            " ORDER BY relname) FROM pg_class WHERE relname IN ('call_records', 'dial_attempts',"
            " 'tasks', 'callback_calls', 'voicemails')")
        open_per_doctor = await pool.fetch(
            "SELECT count(*) AS n FROM tasks t JOIN staff s ON s.id = t.owner_staff_id"
            " WHERE t.status = 'open' AND s.district_id = $1 GROUP BY s.id ORDER BY n", data.district_id)
    finally:
        await pool.close()
    where = "HOTLINE_BENCH_DATABASE_URL" if os.environ.get("HOTLINE_BENCH_DATABASE_URL") else "embedded"
    counts = [r["n"] for r in open_per_doctor] or [0]
    missing = [name for name, there in (("recordings.call_search", CallSearch), ("handover.desk", open_tasks))
               if there is None]
    print_table(results, [
        "Jiayi Hotline — console benchmark (bench/console.py)",
        f"cores: {os.cpu_count()}   load average {os.getloadavg()[0]:.1f}   Python {platform.python_version()}"
        f"   PostgreSQL {server} ({where}), database {size}",
        f"data: {data.describe()}",
        f"tables: {tables}",
        f"desk: open tasks per family doctor: median {counts[len(counts) // 2]}, max {counts[-1]}",
        f"each measure: {SAMPLES} cases (fresh viewer and value each) after {WARM_UP} warm-up; "
        f"search = first page of {PAGE}, newest first",
    ], [
        ("console functions not merged on this branch, measured with the bench's SQL only: "
         + ", ".join(missing)) if missing else "console functions measured beside the bench's SQL",
        f"board: Redis pub/sub to a web node, and the console's SSE stream to {BOARD_VIEWERS} browsers"
        f" ({SSE_CALLS} calls × 4 steps at {BOARD_RATE:g} steps/s)",
        f"run: {time.perf_counter() - run_started:.1f} s",
    ])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.console", description=__doc__.split("\n")[0])
    p.add_argument("--residents", type=int, default=None, help="default 510000 (--smoke: 2000)")
    p.add_argument("--calls", type=int, default=None, help="default 1000000 (--smoke: 5000)")
    p.add_argument("--days", type=int, default=None, help="default 90 (--smoke: 14)")
    p.add_argument("--seed", type=int, default=None, help="default 1 (--smoke: 9002)")
    p.add_argument("--samples", type=int, default=None, help=f"cases per measure (default {SAMPLES})")
    p.add_argument("--regenerate", action="store_true", help="write the calls and callbacks again")
    p.add_argument("--explain", action="store_true",
                   help="EXPLAIN ANALYZE of each bench-sql measure and console search, on stderr")
    p.add_argument("--only", help="only the measures whose 'measure role' matches this regular expression")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--smoke", action="store_true", help="a run of seconds on small data of its own")
    p.add_argument("--serve-console", action="store_true", help=argparse.SUPPRESS)  # measure_sse_viewers' child
    args = p.parse_args(argv)
    if args.serve_console:
        asyncio.run(serve_console())
        return
    if args.smoke:
        globals().update(SMOKE)
    if args.only:
        globals()["ONLY"] = re.compile(args.only)
    if args.samples:
        globals()["SAMPLES"] = args.samples
    args.residents = args.residents or (SMOKE_RESIDENTS if args.smoke else 510_000)
    args.calls = args.calls or (SMOKE_CALLS if args.smoke else 1_000_000)
    args.days = args.days or (SMOKE_DAYS if args.smoke else 90)
    args.seed = args.seed if args.seed is not None else (SMOKE_SEED if args.smoke else 1)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
