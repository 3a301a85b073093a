"""`hotline roster check|swap` and `hotline staff leave`: the duty roster as people change it."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from hotline.cli_common import NotFound
from hotline.runtime import Runtime, checked_pool
from routing.chain import DutyShift
from routing.directory import staff_of
from routing.roster_check import roster_gaps

EXIT_GAPS = 1


class RosterError(Exception):
    """A roster change that cannot be made; the message says why."""


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("roster", help="the duty roster: check for gaps, swap shifts")
    roster = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = roster.add_parser("check", help="night/rest-day hours with no doctor on the roster (exit 1 if any)")
    check.add_argument("--days", type=int, default=30)
    check.add_argument("--from", dest="start", help="first day (default: today)")
    swap = roster.add_parser("swap", help="give one doctor's shift to another (换班)")
    swap.add_argument("--at", required=True, help="an instant inside the shift (ISO 8601)")
    swap.add_argument("--from", dest="from_staff", required=True, help="staff number (工号) on the shift")
    swap.add_argument("--to", dest="to_staff", required=True, help="staff number taking it over")

    s = sub.add_parser("staff", help="staff availability")
    staff = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    leave = staff.add_parser("leave", help="put someone on leave (skipped by routing), or --cancel")
    leave.add_argument("staff_no")
    leave.add_argument("--from", dest="starts_on", required=True, help="first day (YYYY-MM-DD)")
    leave.add_argument("--to", dest="ends_on", required=True, help="last day (YYYY-MM-DD)")
    leave.add_argument("--reason", default="")
    leave.add_argument("--cancel", action="store_true", help="remove the leave starting on --from")
    from hotline import cli_accounts, cli_sip

    cli_sip.add_staff_parser(staff)
    cli_accounts.add_staff_parser(staff)


def _day(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RosterError(f"{what}: {text!r} is not a date (YYYY-MM-DD)") from None


async def _staff_row(conn: asyncpg.Connection, staff_no: str) -> Any:
    row = await conn.fetchrow("SELECT * FROM staff WHERE staff_no = $1", staff_no)
    if row is None:
        raise NotFound(f"no staff member has the number {staff_no!r}")
    return row


async def cmd_roster(rt: Runtime, args: argparse.Namespace,
                     calendar: Callable[[asyncpg.Connection], Awaitable[Any]]) -> int:
    if args.action == "check":
        return await _check(rt, args, calendar)
    return await _swap(rt, args)


async def _check(rt: Runtime, args: argparse.Namespace, calendar: Callable[[asyncpg.Connection], Awaitable[Any]]) -> int:
    if not 1 <= args.days <= 366:
        raise RosterError("--days: from 1 to 366")
    first = _day(args.start, "--from") if args.start else datetime.now(rt.config.tz).date()
    start = datetime.combine(first, datetime.min.time(), rt.config.tz)
    end = start + timedelta(days=args.days)
    async with checked_pool(rt.database_url) as pool, pool.acquire() as conn:
        cal = await calendar(conn)
        rows = await conn.fetch(
            """SELECT s.*, st.id, st.name, st.role, st.sip_uri, st.center_id AS staff_center,
                      st.team_id, st.left_on, st.district_id AS staff_district
               FROM duty_shifts s JOIN staff st ON st.id = s.doctor_id
               WHERE tstzrange(s.starts_at, s.ends_at) && tstzrange($1, $2)""", start, end)
        centers = [(r["id"], r["name"], r["district_id"])
                   for r in await conn.fetch("SELECT id, name, district_id FROM centers ORDER BY id")]
    shifts = [DutyShift(staff_of({**dict(r), "center_id": r["staff_center"], "district_id": r["staff_district"]}),
                        r["starts_at"], r["ends_at"], r["center_id"], r["district_id"], r["kind"],
                        r["ring_position"]) for r in rows]
    gaps = roster_gaps(cal, shifts, centers, start, end)
    tz = rt.config.tz
    for g in gaps:
        hours = (g.ends_at - g.starts_at).total_seconds() / 3600
        print(f"{g.center}: no doctor on the roster {g.starts_at.astimezone(tz):%Y-%m-%d %H:%M} – "
              f"{g.ends_at.astimezone(tz):%Y-%m-%d %H:%M} ({hours:g} h; {g.why})")
    print(f"{len(gaps)} gap(s) in {len(centers)} center(s) from {first} for {args.days} days"
          + ("; calls in a gap go to the district duty desk" if gaps else ""))
    return EXIT_GAPS if gaps else 0


async def _swap(rt: Runtime, args: argparse.Namespace) -> int:
    try:
        at = datetime.fromisoformat(args.at)
    except ValueError:
        raise RosterError(f"--at: cannot read {args.at!r} as an ISO 8601 time") from None
    at = at if at.tzinfo else at.replace(tzinfo=rt.config.tz)
    async with checked_pool(rt.database_url) as pool, pool.acquire() as conn, conn.transaction():
        giver, taker = await _staff_row(conn, args.from_staff), await _staff_row(conn, args.to_staff)
        if taker["role"] not in ("night_doctor", "family_doctor"):
            raise RosterError(f"{taker['name']} ({args.to_staff}) is a {taker['role']}, not a doctor")
        if taker["left_on"] is not None and taker["left_on"] <= at.astimezone(rt.config.tz).date():
            raise RosterError(f"{taker['name']} ({args.to_staff}) left on {taker['left_on']}")
        shift = await conn.fetchrow(
            "SELECT id, starts_at, ends_at FROM duty_shifts WHERE doctor_id = $1"
            " AND tstzrange(starts_at, ends_at) @> $2::timestamptz", giver["id"], at)
        if shift is None:
            raise NotFound(f"{giver['name']} ({args.from_staff}) has no shift at {at.isoformat()}")
        try:
            await conn.execute(
                "UPDATE duty_shifts SET doctor_id = $2, swapped_from = COALESCE(swapped_from, $3) WHERE id = $1",
                shift["id"], taker["id"], giver["id"])
        except asyncpg.ExclusionViolationError:
            raise RosterError(f"{taker['name']} ({args.to_staff}) already has a shift overlapping "
                              f"{shift['starts_at'].astimezone(rt.config.tz):%m-%d %H:%M}–"
                              f"{shift['ends_at'].astimezone(rt.config.tz):%m-%d %H:%M}") from None
    print(f"shift {shift['starts_at'].astimezone(rt.config.tz):%Y-%m-%d %H:%M}–"
          f"{shift['ends_at'].astimezone(rt.config.tz):%m-%d %H:%M}: {giver['name']} → {taker['name']}")
    return 0


async def cmd_staff(rt: Runtime, args: argparse.Namespace) -> int:
    if args.action == "sip-password":
        from hotline import cli_sip

        return await cli_sip.cmd_staff_sip_password(rt, args)
    if args.action == "password":
        from hotline import cli_accounts

        return await cli_accounts.cmd_staff_password(rt, args)
    starts_on, ends_on = _day(args.starts_on, "--from"), _day(args.ends_on, "--to")
    if ends_on < starts_on:
        raise RosterError(f"--to {ends_on} is before --from {starts_on}")
    async with checked_pool(rt.database_url) as pool, pool.acquire() as conn:
        person = await _staff_row(conn, args.staff_no)
        if args.cancel:
            done = await conn.execute("DELETE FROM staff_leaves WHERE staff_id = $1 AND starts_on = $2",
                                      person["id"], starts_on)
            if done == "DELETE 0":
                raise NotFound(f"{person['name']} has no leave starting on {starts_on}")
            print(f"{person['name']}: leave from {starts_on} cancelled")
            return 0
        try:
            await conn.execute(
                "INSERT INTO staff_leaves (staff_id, starts_on, ends_on, reason) VALUES ($1, $2, $3, $4)",
                person["id"], starts_on, ends_on, args.reason)
        except asyncpg.ExclusionViolationError:
            raise RosterError(f"{person['name']} already has leave overlapping {starts_on}–{ends_on}") from None
    print(f"{person['name']}: on leave {starts_on} – {ends_on}" + (f" ({args.reason})" if args.reason else "")
          + "; routing skips them on those days")
    return 0


