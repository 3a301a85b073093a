"""报表: the hotline's figures per doctor, team, center or district and per day, week or month.

Per group and period bucket:
- calls: offered (every inbound call record: click-to-call's outbound calls are not offered),
  answered (a human took it: disposition 'connected'), the answered rate, the time to answer (offered_at → connected_at, the caller's wait) as average
  and 90th percentile (linear interpolation, PostgreSQL's percentile_cont), abandoned (the caller
  hung up while waiting for a human);
- callbacks: the tasks *opened* in the bucket (a cohort), and what became of them: closed on time
  (done with closed_at <= due_at), closed late (done after due_at), open and overdue at `now` —
  the one definition of on time, handover/promise_reports.py (its report of every kind of
  promise buckets by the deadline; this cohort, next to the calls, by the opening).
  Open tasks not yet due and cancelled tasks make up the rest of the cohort.

Groups:
- doctor: every staff member rung for the call (dial_attempts) or who answered it
  (call_records.answered_by); a call rung to two doctors counts for both, but is answered only for
  the one who took it. A callback belongs to its owner (the desk's own tasks are in no doctor's).
- team / center / district: the call's own columns (migration 0018: where the call belonged when
    it was routed). A callback belongs where the first missed call behind it belonged (with no call
  known, where its owner works). Calls and tasks with no team (an unknown caller on a district
  line) or center form a group of their own (group_id None), so the groups of a level add up to
  the district.

Buckets are calendar days, ISO weeks (from Monday) or months in the district's time zone
(Asia/Shanghai), named by their first day; `since` and `until` are both included, and a bucket
that straddles them counts only the days inside. Buckets with nothing in them are not returned
(`bucket_starts` lists them all, for a chart's x-axis).

Everything goes through the viewer's scope: the calls by `scope.calls`, the tasks by
`scope.tasks`; a call or task outside it is never counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from handover.promise_reports import group_join, late, on_time
from routing.scope import Params, Scope

SHANGHAI = ZoneInfo("Asia/Shanghai")
LEVELS = ("doctor", "team", "center", "district")
PERIODS = ("day", "week", "month")
# The call_records column of a level (migration 0018), and the table its ids refer to.
_CALL_COLUMN = {"team": "team_id", "center": "center_id", "district": "district_id"}
_GROUP_TABLE = {"doctor": "staff", "team": "teams", "center": "centers", "district": "districts"}
MAX_DAYS = 3 * 366  # a report spans at most about three years


@dataclass(frozen=True)
class ReportRow:
    level: str
    group_id: int | None
    group_name: str             # '' for the group of calls that belong to none (group_id None)
    bucket: date                # the first day of the day / week / month
    offered: int = 0
    answered: int = 0
    answered_rate: float | None = None     # answered / offered; None when nothing was offered
    avg_answer_s: float | None = None      # None when nothing was answered
    p90_answer_s: float | None = None
    abandoned: int = 0
    callbacks_opened: int = 0
    callbacks_on_time: int = 0
    callbacks_late: int = 0
    callbacks_open_overdue: int = 0


def bucket_of(day: date, period: str) -> date:
    """The first day of the bucket holding `day`."""
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown period {period!r}")


def bucket_starts(period: str, since: date, until: date) -> list[date]:
    """Every bucket from the one holding `since` to the one holding `until`, in order."""
    out: list[date] = []
    b = bucket_of(since, period)
    while b <= until:
        out.append(b)
        if period == "day":
            b += timedelta(days=1)
        elif period == "week":
            b += timedelta(days=7)
        else:
            b = (b.replace(day=28) + timedelta(days=4)).replace(day=1)
    return out


def _check(level: str, period: str, since: date, until: date) -> None:
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}")
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}")
    if until < since:
        raise ValueError("the report ends before it starts")
    if (until - since).days > MAX_DAYS:
        raise ValueError(f"a report spans at most {MAX_DAYS} days")


def _calls_sql(scope: Scope, p: Params, level: str) -> str:
    """Per (group, bucket): the call figures. Placeholders $1..$4 are period, tz, from, to."""
    if level == "doctor":
        # who the call was for: everyone rung, and whoever answered (rung or not)
        group_from = """ JOIN LATERAL (
                SELECT a.staff_id FROM dial_attempts a
                 WHERE a.call_record_id = c.id AND a.staff_id IS NOT NULL
                UNION
                SELECT c.answered_by WHERE c.answered_by IS NOT NULL) g(group_id) ON true"""
        answered = "c.answered_by = g.group_id"
    else:
        group_from = f" CROSS JOIN LATERAL (SELECT c.{_CALL_COLUMN[level]}) g(group_id)"
        answered = "c.disposition = 'connected'"
    wait = "extract(epoch FROM c.connected_at - c.offered_at)"
    answered_wait = f"{answered} AND c.connected_at IS NOT NULL"
    return f"""
        SELECT g.group_id, date_trunc($1, c.offered_at AT TIME ZONE $2)::date AS bucket,
               count(*) AS offered,
               count(*) FILTER (WHERE {answered}) AS answered,
               avg({wait}) FILTER (WHERE {answered_wait}) AS avg_answer_s,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY {wait})
                   FILTER (WHERE {answered_wait}) AS p90_answer_s,
               count(*) FILTER (WHERE c.disposition = 'abandoned') AS abandoned
          FROM call_records c{group_from}
         WHERE c.offered_at >= $3 AND c.offered_at < $4 AND c.direction = 'inbound' AND {scope.calls(p, "c")}
         GROUP BY 1, 2"""  # noqa: S608 - constant SQL, the level's column and the scope's predicate


def _tasks_sql(scope: Scope, p: Params, level: str) -> str:
    """Per (group, bucket of opened_at): the callback figures. $5 is now."""
    # the owner, or where the first missed call behind the task belonged (with no call known,
    # where its owner works): the groups of the promises report
    group_filter = " AND t.owner_staff_id IS NOT NULL" if level == "doctor" else ""
    return f"""
        SELECT g.group_id, date_trunc($1, t.opened_at AT TIME ZONE $2)::date AS bucket,
               count(*) AS callbacks_opened,
               count(*) FILTER (WHERE {on_time("t")}) AS callbacks_on_time,
               count(*) FILTER (WHERE {late("t")}) AS callbacks_late,
               count(*) FILTER (WHERE t.status = 'open' AND t.due_at < $5)
                   AS callbacks_open_overdue
          FROM tasks t{group_join(level, "t")}
         WHERE t.opened_at >= $3 AND t.opened_at < $4 AND t.kind = 'callback'{group_filter}
           AND {scope.tasks(p, "t")}
         GROUP BY 1, 2"""  # noqa: S608 - constant SQL, the level's column and the scope's predicate


async def report(pool: asyncpg.Pool | asyncpg.Connection, scope: Scope, *, level: str,
                 period: str, since: date, until: date, tz: ZoneInfo = SHANGHAI,
                 now: datetime | None = None) -> list[ReportRow]:
    """The report's rows, ordered by group name (the no-group group last), then bucket.

    `since` and `until` are days in `tz`, both included; `now` (default: the wall clock) decides
    which open callbacks are overdue.
    """
    _check(level, period, since, until)
    now = now or datetime.now(UTC)
    start = datetime.combine(since, time(0), tz)
    end = datetime.combine(until + timedelta(days=1), time(0), tz)
    tz_name = tz.key

    p = Params(period, tz_name, start, end)
    call_rows = await pool.fetch(_calls_sql(scope, p, level), *p.values)
    p = Params(period, tz_name, start, end, now)
    task_rows = await pool.fetch(_tasks_sql(scope, p, level), *p.values)

    rows: dict[tuple[int | None, date], ReportRow] = {}
    for r in call_rows:
        offered, answered = r["offered"], r["answered"]
        rows[(r["group_id"], r["bucket"])] = ReportRow(
            level=level, group_id=r["group_id"], group_name="", bucket=r["bucket"],
            offered=offered, answered=answered,
            answered_rate=answered / offered if offered else None,
            avg_answer_s=None if r["avg_answer_s"] is None else float(r["avg_answer_s"]),
            p90_answer_s=None if r["p90_answer_s"] is None else float(r["p90_answer_s"]),
            abandoned=r["abandoned"])
    for r in task_rows:
        key = (r["group_id"], r["bucket"])
        row = rows.get(key) or ReportRow(level=level, group_id=r["group_id"], group_name="",
                                         bucket=r["bucket"])
        rows[key] = replace(row, callbacks_opened=r["callbacks_opened"],
                            callbacks_on_time=r["callbacks_on_time"],
                            callbacks_late=r["callbacks_late"],
                            callbacks_open_overdue=r["callbacks_open_overdue"])

    ids = sorted({g for g, _ in rows if g is not None})
    names: dict[int, str] = {}
    if ids:
        table = _GROUP_TABLE[level]
        names = {n["id"]: n["name"] for n in await pool.fetch(
            f"SELECT id, name FROM {table} WHERE id = ANY($1::int[])", ids)}  # noqa: S608 - table from a constant map
    out = [replace(row, group_name=names.get(g, "") if g is not None else "")
           for (g, _), row in rows.items()]
    out.sort(key=lambda r: (r.group_id is None, r.group_name, r.group_id or 0, r.bucket))
    return out


@dataclass(frozen=True)
class Figure:
    field: str       # the ReportRow attribute
    title: str       # the chart's and the CSV column's Chinese name
    unit: str
    scale: float = 1.0
    count: bool = True   # a count is 0 in an empty bucket; a rate or a duration has no value


FIGURES: tuple[Figure, ...] = (
    Figure("offered", "来电量", "通"),
    Figure("answered", "接通量", "通"),
    Figure("answered_rate", "接通率", "%", 100.0, count=False),
    Figure("avg_answer_s", "平均应答时长", "秒", count=False),
    Figure("p90_answer_s", "90%应答时长", "秒", count=False),
    Figure("abandoned", "放弃量", "通"),
    Figure("callbacks_opened", "回拨任务", "个"),
    Figure("callbacks_on_time", "按时回拨", "个"),
    Figure("callbacks_late", "超时回拨", "个"),
    Figure("callbacks_open_overdue", "逾期未回拨", "个"),
)


def combined(rows: list[ReportRow]) -> list[ReportRow]:
    """The groups of a report added up per bucket (group_id None), for a chart of the whole.

    Counts add; the answered rate and the average wait are recomputed from the sums (the wait
    weighted by the calls answered); a 90th percentile cannot be added up, so it is kept only
    where the bucket has one group. At the doctor level a call rung to two doctors counts for
    both, as in their rows."""
    by_bucket: dict[date, list[ReportRow]] = {}
    for r in rows:
        by_bucket.setdefault(r.bucket, []).append(r)
    out = []
    for bucket, group in sorted(by_bucket.items()):
        offered = sum(r.offered for r in group)
        answered = sum(r.answered for r in group)
        waited = sum((r.avg_answer_s or 0.0) * r.answered for r in group)
        out.append(ReportRow(
            level=group[0].level, group_id=None, group_name="", bucket=bucket, offered=offered,
            answered=answered, answered_rate=answered / offered if offered else None,
            avg_answer_s=waited / answered if answered else None,
            p90_answer_s=group[0].p90_answer_s if len(group) == 1 else None,
            abandoned=sum(r.abandoned for r in group),
            callbacks_opened=sum(r.callbacks_opened for r in group),
            callbacks_on_time=sum(r.callbacks_on_time for r in group),
            callbacks_late=sum(r.callbacks_late for r in group),
            callbacks_open_overdue=sum(r.callbacks_open_overdue for r in group)))
    return out


def series(rows: list[ReportRow], figure: Figure, buckets: list[date], *,
           group_id: int | None) -> list[tuple[str, float | None]]:
    """One group's values of one figure over `buckets` (bucket_starts), for web/charts.py:
    (label, value), a count 0 and a rate or duration None (a gap) where the bucket has no row."""
    by_bucket = {r.bucket: r for r in rows if r.group_id == group_id}
    out: list[tuple[str, float | None]] = []
    for b in buckets:
        row = by_bucket.get(b)
        value = getattr(row, figure.field) if row is not None else None
        if value is None and figure.count:
            value = 0
        out.append((b.isoformat(), None if value is None else value * figure.scale))
    return out
