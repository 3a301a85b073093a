"""Changing the duty roster: a shift given to another doctor (换班), and the roster of a period
with its gaps. `hotline roster` and the console's admin pages both go through here, so a swap
is judged by one set of rules wherever it is made."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

import asyncpg

from routing.chain import DutyShift, ServiceCalendar
from routing.directory import staff_of
from routing.roster_check import Gap, roster_gaps

DOCTOR_ROLES = ("night_doctor", "family_doctor")


class RosterError(Exception):
    """A roster change that cannot be made; the message says why."""


class RosterNotFound(RosterError):
    """The shift or staff member named does not exist (or not in the district asked)."""


class RosterConflict(RosterError):
    """The doctor taking the shift is already on the roster at that time."""


@dataclass(frozen=True)
class Swapped:
    shift_id: int
    starts_at: datetime
    ends_at: datetime
    giver_no: str
    giver: str
    taker_no: str
    taker: str


async def staff_by_number(conn: asyncpg.Connection, staff_no: str, district_id: int | None = None) -> Any:
    row = await conn.fetchrow(
        "SELECT * FROM staff WHERE staff_no = $1 AND ($2::integer IS NULL OR district_id = $2)",
        staff_no, district_id)
    if row is None:
        raise RosterNotFound(f"no staff member has the number {staff_no!r}")
    return row


async def shift_at(conn: asyncpg.Connection, doctor_id: int, at: datetime) -> int | None:
    """The id of the doctor's shift that contains `at`."""
    found: int | None = await conn.fetchval(
        "SELECT id FROM duty_shifts WHERE doctor_id = $1"
        " AND tstzrange(starts_at, ends_at) @> $2::timestamptz", doctor_id, at)
    return found


async def swap_shift(conn: asyncpg.Connection, shift_id: int, taker_no: str, *, tz: tzinfo,
                     district_id: int | None = None) -> Swapped:
    """Give shift `shift_id` to the staff member `taker_no`, in one transaction.

    The doctor first rostered is kept in swapped_from (the roster as published vs as worked).
    `district_id`: only a shift and a taker of that district (RosterNotFound otherwise)."""
    async with conn.transaction():
        shift = await conn.fetchrow(
            "SELECT s.id, s.starts_at, s.ends_at, s.doctor_id, g.staff_no, g.name"
            " FROM duty_shifts s JOIN staff g ON g.id = s.doctor_id"
            " WHERE s.id = $1 AND ($2::integer IS NULL OR s.district_id = $2) FOR UPDATE OF s",
            shift_id, district_id)
        if shift is None:
            raise RosterNotFound(f"there is no shift {shift_id}")
        taker = await staff_by_number(conn, taker_no, district_id)
        if taker["role"] not in DOCTOR_ROLES:
            raise RosterError(f"{taker['name']} ({taker_no}) is a {taker['role']}, not a doctor")
        if taker["left_on"] is not None and taker["left_on"] <= shift["starts_at"].astimezone(tz).date():
            raise RosterError(f"{taker['name']} ({taker_no}) left on {taker['left_on']}")
        if taker["id"] == shift["doctor_id"]:
            raise RosterError(f"{taker['name']} ({taker_no}) already has this shift")
        try:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE duty_shifts SET doctor_id = $2, swapped_from = COALESCE(swapped_from, $3)"
                    " WHERE id = $1", shift_id, taker["id"], shift["doctor_id"])
        except asyncpg.ExclusionViolationError:
            raise RosterConflict(f"{taker['name']} ({taker_no}) already has a shift overlapping "
                              f"{shift['starts_at'].astimezone(tz):%m-%d %H:%M}–"
                              f"{shift['ends_at'].astimezone(tz):%m-%d %H:%M}") from None
    return Swapped(shift_id, shift["starts_at"], shift["ends_at"], shift["staff_no"], shift["name"],
                   taker_no, taker["name"])


_SHIFTS_SQL = """
SELECT s.id AS shift_id, s.starts_at, s.ends_at, s.center_id AS shift_center,
       s.district_id AS shift_district, s.kind, s.ring_position, s.note,
       st.id, st.staff_no, st.name, st.role, st.sip_uri, st.center_id, st.team_id, st.left_on,
       st.district_id, ce.name AS center, f.staff_no AS swapped_from_no, f.name AS swapped_from
FROM duty_shifts s JOIN staff st ON st.id = s.doctor_id
LEFT JOIN centers ce ON ce.id = s.center_id
LEFT JOIN staff f ON f.id = s.swapped_from
WHERE tstzrange(s.starts_at, s.ends_at) && tstzrange($1, $2)
  AND ($3::integer IS NULL OR s.district_id = $3)
ORDER BY s.starts_at, s.center_id NULLS FIRST, s.kind DESC, s.ring_position, s.id
"""


async def shifts_between(conn: asyncpg.Connection, start: datetime, end: datetime,
                         district_id: int | None = None) -> list[Any]:
    """The roster rows overlapping [start, end): the shift, its doctor, its center."""
    return list(await conn.fetch(_SHIFTS_SQL, start, end, district_id))


def as_duty_shift(row: Any) -> DutyShift:
    return DutyShift(staff_of(row), row["starts_at"], row["ends_at"], row["shift_center"],
                     row["shift_district"], row["kind"], row["ring_position"])


async def gaps_between(conn: asyncpg.Connection, calendar: ServiceCalendar, start: datetime,
                       end: datetime, district_id: int | None = None,
                       rows: list[Any] | None = None) -> list[Gap]:
    """Night or rest-day hours in [start, end) with no doctor on the roster, per center."""
    if rows is None:
        rows = await shifts_between(conn, start, end, district_id)
    centers = [(r["id"], r["name"], r["district_id"]) for r in await conn.fetch(
        "SELECT id, name, district_id FROM centers WHERE ($1::integer IS NULL OR district_id = $1)"
        " ORDER BY id", district_id)]
    return roster_gaps(calendar, [as_duty_shift(r) for r in rows], centers, start, end)
