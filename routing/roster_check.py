"""Roster gaps: night or rest-day service with no doctor on the roster for a center.

A gap is a configuration error (`hotline roster check --days 30` reports it); at run time the
chain falls through to the district duty desk, so a gap costs a resident a doctor, never the
call. Covered means a duty or backup shift of the center, or a district-wide shift.

The check is exact without scanning minute by minute: day/night and coverage only change at
shift boundaries and at the half-hour marks where day windows open and close, so one look at
the middle of each elementary interval between those instants decides the whole interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from routing.chain import DutyShift, ServiceCalendar

MARK = timedelta(minutes=30)


@dataclass(frozen=True)
class Gap:
    center_id: int
    center: str
    starts_at: datetime
    ends_at: datetime
    why: str  # the calendar's reason at the start of the gap (why it is night service)


def roster_gaps(calendar: ServiceCalendar, shifts: Sequence[DutyShift], centers: Sequence[tuple[int, str, int]],
                start: datetime, end: datetime) -> list[Gap]:
    """Gaps in [start, end) for each (center id, name, district id), merged and in time order."""
    marks = set()
    t = start
    while t < end:
        marks.add(t)
        t += MARK
    for s in shifts:
        marks.update(x for x in (s.starts_at, s.ends_at) if start < x < end)
    instants = sorted(marks | {end})
    gaps: list[Gap] = []
    for center_id, name, district_id in centers:
        mine = [s for s in shifts if s.district_id == district_id
                and (s.center_id == center_id or s.center_id is None)]
        open_gap: tuple[datetime, str] | None = None
        for a, b in zip(instants, instants[1:], strict=False):
            middle = a + (b - a) / 2
            service = calendar.day_service(middle, center_id)
            uncovered = not service.day and not any(s.covers(middle) for s in mine)
            if uncovered and open_gap is None:
                open_gap = (a, service.reason)
            elif not uncovered and open_gap is not None:
                gaps.append(Gap(center_id, name, open_gap[0], a, open_gap[1]))
                open_gap = None
        if open_gap is not None:
            gaps.append(Gap(center_id, name, open_gap[0], end, open_gap[1]))
    return sorted(gaps, key=lambda g: (g.starts_at, g.center))
