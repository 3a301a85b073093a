"""Today's figures for the live board: per center and for the district, within a viewer's scope.

Calls (one query over call_records, the day's range of offered_at, indexed by district/center
and offered_at):
- offered: every call that reached the service that day (in progress ones included; the calls
  the service placed for staff, direction 'outbound', are not offered calls and are left out);
- answered %: calls a human answered (connected_at set) / offered;
- abandoned %: disposition 'abandoned' (the caller hung up while a human was rung) / offered;
- time to answer: connected_at - offered_at of the answered calls, its mean and its 90th
  percentile (PostgreSQL's percentile_cont: interpolated between the two nearest calls).
Callbacks (one query over the open tasks, tasks_due): open now, due within the
next hour, overdue (due_at passed). A task counts for the center of its resident, or else of its
owner.

The district row sums what the scope lets the viewer see (a director's "district" is her center):
nothing outside the scope is counted anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from routing.scope import Params, Scope

SHANGHAI = ZoneInfo("Asia/Shanghai")
DUE_SOON = timedelta(hours=1)


@dataclass(frozen=True)
class Figures:
    center_id: int | None     # None: the district (everything in scope)
    center: str | None
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    avg_answer_s: float | None = None
    p90_answer_s: float | None = None
    callbacks_open: int = 0
    callbacks_due_1h: int = 0
    callbacks_overdue: int = 0

    @property
    def answered_pct(self) -> float | None:
        return round(100.0 * self.answered / self.offered, 1) if self.offered else None

    @property
    def abandoned_pct(self) -> float | None:
        return round(100.0 * self.abandoned / self.offered, 1) if self.offered else None

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "answered_pct": self.answered_pct, "abandoned_pct": self.abandoned_pct}


@dataclass(frozen=True)
class DayFigures:
    day: date
    district: Figures
    centers: list[Figures]

    def as_json(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "district": self.district.as_json(),
                "centers": [c.as_json() for c in self.centers]}


def day_range(day: date, tz: ZoneInfo = SHANGHAI) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tz)
    return start, datetime.combine(day + timedelta(days=1), time(0), tz)


# GROUPING SETS: one row per center and one for everything (grouped = 1).
_CALLS = """
SELECT c.center_id, GROUPING(c.center_id) AS total,
       count(*) AS offered,
       count(*) FILTER (WHERE c.connected_at IS NOT NULL) AS answered,
       count(*) FILTER (WHERE c.disposition = 'abandoned') AS abandoned,
       avg(extract(epoch FROM c.connected_at - c.offered_at))
           FILTER (WHERE c.connected_at IS NOT NULL) AS avg_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM c.connected_at - c.offered_at))
           FILTER (WHERE c.connected_at IS NOT NULL) AS p90_s
FROM call_records c
WHERE c.offered_at >= $1 AND c.offered_at < $2 AND c.direction = 'inbound' AND {scope}
GROUP BY GROUPING SETS ((c.center_id), ())
"""

# Overdue as the watcher breaches (handover/watcher.py) and the desk counts (handover/desk.py
# urgency): past the deadline, not at it — a task closed at its due time is on time. Read from
# due_at, not overdue_at, so the board is right even in the seconds before the watcher's sweep.
_CALLBACKS = """
SELECT COALESCE(tr.center_id, ts.center_id) AS center_id,
       GROUPING(COALESCE(tr.center_id, ts.center_id)) AS total,
       count(*) AS open,
       count(*) FILTER (WHERE t.due_at >= $1 AND t.due_at <= $2) AS due_soon,
       count(*) FILTER (WHERE t.due_at < $1) AS overdue
FROM tasks t
LEFT JOIN residents tr ON tr.id = t.resident_id
LEFT JOIN staff ts ON ts.id = t.owner_staff_id
WHERE t.status = 'open' AND {scope}
GROUP BY GROUPING SETS ((COALESCE(tr.center_id, ts.center_id)), ())
"""


async def day_figures(pool: asyncpg.Pool | asyncpg.Connection, scope: Scope, day: date, *,
                      now: datetime, tz: ZoneInfo = SHANGHAI) -> DayFigures:
    """The figures of `day` (local to `tz`) within `scope`; callbacks as of `now`."""
    start, end = day_range(day, tz)
    p = Params(start, end)
    # Constant SQL with the scope's predicate; every value is a placeholder.
    calls = await pool.fetch(_CALLS.format(scope=scope.calls(p, "c")), *p.values)
    q = Params(now, now + DUE_SOON)
    tasks = await pool.fetch(_CALLBACKS.format(scope=scope.tasks(q, "t")), *q.values)
    merged: dict[int | None, dict[str, Any]] = {}
    district: dict[str, Any] = {}
    for r in calls:
        row = district if r["total"] else merged.setdefault(r["center_id"], {})
        row.update(offered=r["offered"], answered=r["answered"], abandoned=r["abandoned"],
                   avg_answer_s=None if r["avg_s"] is None else round(float(r["avg_s"]), 3),
                   p90_answer_s=None if r["p90_s"] is None else round(float(r["p90_s"]), 3))
    for r in tasks:
        row = district if r["total"] else merged.setdefault(r["center_id"], {})
        row.update(callbacks_open=r["open"], callbacks_due_1h=r["due_soon"],
                   callbacks_overdue=r["overdue"])
    ids = [i for i in merged if i is not None]
    names = {r["id"]: r["name"] for r in await pool.fetch(
        "SELECT id, name FROM centers WHERE id = ANY($1::int[])", ids)} if ids else {}
    centers = [Figures(i, names.get(i) if i is not None else None, **merged[i])
               for i in sorted(merged, key=lambda k: (k is None, k or 0))]
    return DayFigures(day, Figures(None, None, **district), centers)
