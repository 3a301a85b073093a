"""履约报表: how well the hotline kept its promises (callbacks, referral follow-ups, handover items).

Per group × kind × period bucket:
- due: the tasks whose deadline falls in the bucket (cancelled tasks promised nothing: left out);
- on time: closed as done (a callback or follow-up worked, a handover item acknowledged) at or
  before the deadline — the one definition, `ON_TIME`, shared with recordings/reports.py;
- late: closed as done after the deadline (the owner had to say why: `late_reason`);
- unreachable: closed as unreachable after the kind's attempts — counted apart, never on time;
- open overdue: still open at `now` with the deadline passed;
- on-time rate: on time / (on time + late + unreachable + open overdue), the promises whose
  outcome is known; a task open and not yet due is in `due` but not in the rate. None when no
  outcome is known.

Buckets are by the deadline (`due_at`), not by when the task opened: a report of November says
how the promises due in November were kept, so a callback opened at 23:00 on the 30th and due at
07:00 on the 1st is December's. Days, ISO weeks (from Monday) and months in Asia/Shanghai, as
recordings/reports.py.

Groups:
- doctor: the task's owner (owner_staff_id). A task is closed by whoever owns it then, and the
  deadline watcher moves only open tasks, so a closed task's owner is the one answerable for it;
  the desk's tasks (no owner) are in no doctor's row. The `closed_by` of each late task is in
  the list below it.
- team / center / district: for a callback, where the first missed call behind it belonged (as
  recordings/reports.py); for any other kind, or a callback with no call known, where its owner
  works (the staff row). Tasks with no group there form a group of their own (group_id None).

Everything goes through `scope.tasks`: a task out of the viewer's scope is never counted or listed.
The list is cut at LIST_MAX (`truncated` says so). Figures at a million tasks: bench/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from handover.night_handover import masked_name
from routing.scope import Params, Scope

SHANGHAI = ZoneInfo("Asia/Shanghai")
LEVELS = ("doctor", "team", "center", "district")
PERIODS = ("day", "week", "month")
KINDS = ("callback", "referral_followup", "handover")
MAX_DAYS = 3 * 366
LIST_MAX = 5000  # the late/unreachable list of one report (the CSV says when it was cut)

# THE definition of a promise kept and broken, over a tasks alias `t` (recordings/reports.py
# counts its callback cohort with the same two).
ON_TIME = "{t}.status = 'done' AND {t}.closed_at <= {t}.due_at"
LATE = "{t}.status = 'done' AND {t}.closed_at > {t}.due_at"

_STAFF_COLUMN = {"team": "team_id", "center": "center_id", "district": "district_id"}
_GROUP_TABLE = {"doctor": "staff", "team": "teams", "center": "centers", "district": "districts"}


def on_time(t: str = "t") -> str:
    return ON_TIME.format(t=t)


def late(t: str = "t") -> str:
    return LATE.format(t=t)


def group_join(level: str, t: str = "t") -> str:
    """FROM-clause joins giving `g.group_id`, the group of task `t` at `level` (see the module
    docstring); at the doctor level, the owner."""
    if level == "doctor":
        return f" CROSS JOIN LATERAL (SELECT {t}.owner_staff_id) g(group_id)"
    column = _STAFF_COLUMN[level]
    return f""" LEFT JOIN LATERAL (
            SELECT true AS found, fc.{column} AS group_id
              FROM callback_calls cc JOIN call_records fc ON fc.id = cc.call_record_id
             WHERE cc.task_id = {t}.id AND {t}.kind = 'callback'
             ORDER BY fc.offered_at, fc.id LIMIT 1) first_call ON true
        LEFT JOIN staff o ON o.id = {t}.owner_staff_id
        CROSS JOIN LATERAL (SELECT CASE WHEN first_call.found THEN first_call.group_id
                                        ELSE o.{column} END) g(group_id)"""  # noqa: S608 - constant map


@dataclass(frozen=True)
class PromiseRow:
    level: str
    group_id: int | None
    group_name: str      # '' for the tasks of no group
    kind: str
    bucket: date         # the first day of the day / week / month of the deadlines
    due: int = 0
    on_time: int = 0
    late: int = 0
    unreachable: int = 0
    open_overdue: int = 0

    @property
    def settled(self) -> int:
        """The promises whose outcome is known: the denominator of the rate."""
        return self.on_time + self.late + self.unreachable + self.open_overdue

    @property
    def on_time_rate(self) -> float | None:
        return self.on_time / self.settled if self.settled else None


@dataclass(frozen=True)
class BrokenPromise:
    """A task late or unreachable (or still open past its deadline), for the list under the table."""

    task_id: int
    kind: str
    status: str
    resident_masked: str     # the caller's masked number, or the resident's masked name
    owner_no: str | None
    owner_name: str | None
    closed_by_no: str | None
    due_at: datetime
    closed_at: datetime | None
    late_reason: str
    close_note: str


@dataclass(frozen=True)
class PromiseReport:
    rows: list[PromiseRow]
    broken: list[BrokenPromise]
    truncated: bool


def _check(level: str, period: str, kinds: tuple[str, ...], since: date, until: date) -> None:
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}")
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    if not kinds or set(kinds) - set(KINDS):
        raise ValueError(f"kinds must be among {', '.join(KINDS)}")
    if until < since:
        raise ValueError("the report ends before it starts")
    if (until - since).days > MAX_DAYS:
        raise ValueError(f"a report spans at most {MAX_DAYS} days")


def combined(rows: list[PromiseRow]) -> list[PromiseRow]:
    """The groups and kinds added up per bucket (group None, kind ''), for a chart of the whole."""
    by_bucket: dict[date, list[PromiseRow]] = {}
    for r in rows:
        by_bucket.setdefault(r.bucket, []).append(r)
    return [PromiseRow(level=group[0].level, group_id=None, group_name="", kind="", bucket=b,
                       due=sum(r.due for r in group), on_time=sum(r.on_time for r in group),
                       late=sum(r.late for r in group),
                       unreachable=sum(r.unreachable for r in group),
                       open_overdue=sum(r.open_overdue for r in group))
            for b, group in sorted(by_bucket.items())]


async def promise_report(pool: asyncpg.Pool | asyncpg.Connection, scope: Scope, *, level: str,
                         period: str, since: date, until: date,
                         kinds: tuple[str, ...] = KINDS, tz: ZoneInfo = SHANGHAI,
                         now: datetime | None = None) -> PromiseReport:
    """The rows (by group name, the no-group group last, then kind, then bucket) and the broken
    promises of the tasks due from `since` to `until` (days in `tz`, both included)."""
    _check(level, period, kinds, since, until)
    now = now or datetime.now(UTC)
    start = datetime.combine(since, time(0), tz)
    end = datetime.combine(until + timedelta(days=1), time(0), tz)
    p = Params(period, tz.key, start, end, list(kinds), now)
    in_range = (f"t.due_at >= $3 AND t.due_at < $4 AND t.kind = ANY($5::text[])"
                f" AND t.status <> 'cancelled' AND {scope.tasks(p, 't')}")
    sql = f"""
        SELECT g.group_id, t.kind, date_trunc($1, t.due_at AT TIME ZONE $2)::date AS bucket,
               count(*) AS due,
               count(*) FILTER (WHERE {on_time()}) AS on_time,
               count(*) FILTER (WHERE {late()}) AS late,
               count(*) FILTER (WHERE t.status = 'unreachable') AS unreachable,
               count(*) FILTER (WHERE t.status = 'open' AND t.due_at < $6) AS open_overdue
          FROM tasks t{group_join(level)}
         WHERE {in_range}{" AND t.owner_staff_id IS NOT NULL" if level == "doctor" else ""}
         GROUP BY 1, 2, 3"""  # noqa: S608 - constant SQL and the scope's predicate
    found = await pool.fetch(sql, *p.values)
    ids = sorted({r["group_id"] for r in found if r["group_id"] is not None})
    names: dict[int, str] = {}
    if ids:
        names = {n["id"]: n["name"] for n in await pool.fetch(
            f"SELECT id, name FROM {_GROUP_TABLE[level]} WHERE id = ANY($1::int[])", ids)}  # noqa: S608 - constant map
    rows = [PromiseRow(level=level, group_id=r["group_id"],
                       group_name=names.get(r["group_id"], "") if r["group_id"] is not None else "",
                       kind=r["kind"], bucket=r["bucket"], due=r["due"], on_time=r["on_time"],
                       late=r["late"], unreachable=r["unreachable"],
                       open_overdue=r["open_overdue"]) for r in found]
    rows.sort(key=lambda r: (r.group_id is None, r.group_name, r.group_id or 0,
                             KINDS.index(r.kind), r.bucket))

    # the list: every promise broken, whatever the level (the groups are one way of counting them)
    # (the first LIST_MAX + 1 picked from the tasks alone, then their names joined: joined
    # before the limit, PostgreSQL joined every broken promise of a big range — 200 000, 4.9 s)
    listed = await pool.fetch(f"""
        WITH picked AS (
            SELECT t.id, t.kind, t.status, t.due_at, t.closed_at, t.late_reason, t.close_note,
                   t.caller_number_masked, t.resident_id, t.owner_staff_id, t.closed_by
              FROM tasks t
             WHERE {in_range} AND $1::text IS NOT NULL AND $2::text IS NOT NULL  -- (typed: unused here)
               AND ({late()} OR t.status = 'unreachable' OR (t.status = 'open' AND t.due_at < $6))
             ORDER BY t.due_at, t.id LIMIT {LIST_MAX + 1})
        SELECT t.id, t.kind, t.status, t.due_at, t.closed_at,
               coalesce(t.late_reason, '') AS late_reason, coalesce(t.close_note, '') AS close_note,
               t.caller_number_masked, r.name AS resident_name,
               o.staff_no AS owner_no, o.name AS owner_name, cb.staff_no AS closed_by_no
          FROM picked t
          LEFT JOIN staff o ON o.id = t.owner_staff_id
          LEFT JOIN staff cb ON cb.id = t.closed_by
          LEFT JOIN residents r ON r.id = t.resident_id
         ORDER BY t.due_at, t.id""", *p.values)  # noqa: S608 - as above
    broken = [BrokenPromise(r["id"], r["kind"], r["status"],
                            r["caller_number_masked"] or masked_name(r["resident_name"]) or "", r["owner_no"],
                            r["owner_name"], r["closed_by_no"], r["due_at"], r["closed_at"],
                            r["late_reason"], r["close_note"]) for r in listed[:LIST_MAX]]
    return PromiseReport(rows, broken, truncated=len(listed) > LIST_MAX)
