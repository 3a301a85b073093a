"""`hotline calendar show|day|import|close|reopen|hours`: the working-day calendar (docs/calendar.md).

Errors an operator can act on are one line on stderr and exit code 2; nothing to show or undo
("not found") is exit code 1. A rejected file lists every problem with its line, as `hotline
import` does.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from hotline.cli_common import EXIT_ERROR, EXIT_NOT_FOUND, print_rejected
from hotline.runtime import Runtime, checked_pool
from routing.calendar import WEEKDAY_NAMES, WorkingCalendar
from routing.calendar_store import (
    FIRST_YEAR,
    LAST_YEAR,
    CalendarError,
    CalendarNotFound,
    CalendarRejected,
    Place,
    center_windows,
    clear_center_window,
    close_day,
    closures_in_year,
    describe_day,
    find_center,
    find_district,
    import_calendar,
    load_calendar,
    parse_date,
    parse_hhmm,
    reopen_day,
    set_center_window,
)

log = structlog.get_logger("hotline.calendar")



def add_parser(sub: Any) -> None:
    s = sub.add_parser("calendar", help="working days: public holidays, 调休, closures, center windows")
    cal = s.add_subparsers(dest="action", required=True, metavar="ACTION")

    show = cal.add_parser("show", help="a year's public holidays, make-up working days and closures")
    show.add_argument("year")

    day = cal.add_parser("day", help="what a date (or an instant) is for routing, and why")
    day.add_argument("date", help="YYYY-MM-DD, or an ISO 8601 instant (e.g. 2026-10-01T10:00)")
    _place_options(day)

    imp = cal.add_parser("import", help="add or replace a year from a CSV file date,kind,name")
    imp.add_argument("file")
    imp.add_argument("--source", help="where the days come from, e.g. 国办发明电〔2025〕7号 "
                                      "(default: the file's name)")

    close = cal.add_parser("close", help="close a center, or the whole district, on a date")
    close.add_argument("date")
    close.add_argument("--reason", required=True, help="why (培训, 停电, …)")
    _place_options(close)

    reopen = cal.add_parser("reopen", help="undo a closure")
    reopen.add_argument("date")
    _place_options(reopen)

    hours = cal.add_parser("hours", help="a center's own day window, or --clear for the default")
    hours.add_argument("--center", required=True)
    hours.add_argument("--day-start", help="HH:MM")
    hours.add_argument("--day-end", help="HH:MM")
    hours.add_argument("--clear", action="store_true", help="back to the default window")


def _place_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--center", help="a center (社区卫生服务中心); without it: the whole district")
    p.add_argument("--district", help="the district, when the database holds several")


async def cmd_calendar(rt: Runtime, args: argparse.Namespace) -> int:
    try:
        async with checked_pool(rt.database_url) as pool, pool.acquire() as conn:
            return await _ACTIONS[args.action](rt, conn, args)
    except CalendarRejected as exc:
        log.warning("calendar.import_rejected", file=args.file, problems=len(exc.problems))
        return print_rejected(args.file, exc.problems)
    except CalendarNotFound as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except CalendarError as exc:
        print(f"hotline: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


async def _calendar(rt: Runtime, conn: asyncpg.Connection) -> WorkingCalendar:
    c = rt.config
    return await load_calendar(conn, tz=c.tz, day_start=c.day_start, day_end=c.day_end)


def _date(text: str) -> date:
    try:
        return parse_date(text)
    except ValueError as exc:
        raise CalendarError(str(exc)) from None


async def _place(conn: asyncpg.Connection, args: argparse.Namespace) -> Place:
    if args.center:
        return await find_center(conn, args.center)
    return await find_district(conn, args.district)


async def _show(rt: Runtime, conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    text = args.year.strip()
    if not text.isdigit() or not FIRST_YEAR <= int(text) <= LAST_YEAR:
        raise CalendarError(f"{text!r} is not a year ({FIRST_YEAR}–{LAST_YEAR})")
    year = int(text)
    cal = await _calendar(rt, conn)
    days = cal.special_days(year)
    if days:
        sources = sorted({d.source for d in days if d.source})
        holidays = sum(d.kind == "holiday" for d in days)
        print(f"{year}: {holidays} public holiday(s), {len(days) - holidays} make-up working day(s)"
              + (f" — {', '.join(sources)}" if sources else ""))
        for d in days:
            print(f"  {describe_day(d)}")
    closures = await closures_in_year(conn, year)
    print(f"closures in {year}:" + ("" if closures else " none"))
    for cl in closures:
        print(f"  {cl.on} {WEEKDAY_NAMES[cl.on.weekday()]}  {cl.place}: {cl.reason}"
              + (f"  (by {cl.by})" if cl.by else ""))
    windows = await center_windows(conn)
    print(f"day windows: {cal.default_window} by default"
          + "".join(f"; {name} {s:%H:%M}–{e:%H:%M}" for name, s, e in windows))
    if not days:
        print(f"hotline: no calendar for {year}: every date in it is treated as an ordinary week; "
              f"import the State Council's notice with `hotline calendar import {year}.csv`", file=sys.stderr)
        return EXIT_NOT_FOUND
    return 0


async def _day(rt: Runtime, conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    place = await _place(conn, args) if (args.center or args.district) else None
    center_id = place.center_id if place else None
    district_id = place.district_id if place and place.center_id is None else None
    cal = await _calendar(rt, conn)
    text = args.date.strip()
    if len(text) > 10:  # an instant: the answer for that moment
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            raise CalendarError(f"cannot read {text!r} as a date (YYYY-MM-DD) or an ISO 8601 instant "
                                "(e.g. 2026-10-01T10:00)") from None
        at = at if at.tzinfo else at.replace(tzinfo=rt.config.tz)
        print(cal.day_service(at, center_id, district_id=district_id).reason)
        return 0
    info = cal.day(_date(text), center_id, district_id=district_id)
    print(info.summary)
    return 0


async def _import(rt: Runtime, conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    done = await import_calendar(conn, Path(args.file), source=args.source)
    log.info("calendar.imported", file=args.file, year=done.year, holidays=done.holidays,
             workdays=done.workdays, replaced=done.replaced, actor=rt.actor)
    what = f"replaced the {done.replaced} earlier day(s)" if done.replaced else "a new year"
    print(f"imported {done.year}: {done.holidays} public holiday(s), {done.workdays} make-up working "
          f"day(s) from {args.file} ({what})")
    return 0


async def _close(rt: Runtime, conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    on = _date(args.date)
    place = await _place(conn, args)
    earlier = await close_day(conn, on, args.reason, place, actor=rt.actor)
    log.info("calendar.closed", place=place.title, on=str(on), reason=args.reason.strip(), actor=rt.actor)
    cal = await _calendar(rt, conn)
    info = cal.day(on, place.center_id, district_id=place.district_id if place.center_id is None else None)
    print(f"{place.title} closed on {on} ({args.reason.strip()})"
          + (f", instead of the earlier reason {earlier!r}" if earlier else ""))
    print(f"  {info.summary}")
    return 0


async def _reopen(rt: Runtime, conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    on = _date(args.date)
    place = await _place(conn, args)
    reason = await reopen_day(conn, on, place)
    log.info("calendar.reopened", place=place.title, on=str(on), was=reason, actor=rt.actor)
    cal = await _calendar(rt, conn)
    info = cal.day(on, place.center_id, district_id=place.district_id if place.center_id is None else None)
    print(f"{place.title} reopened on {on} (was closed: {reason})")
    print(f"  {info.summary}")
    return 0


async def _hours(rt: Runtime, conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    place = await find_center(conn, args.center)
    default = f"{rt.config.day_start:%H:%M}–{rt.config.day_end:%H:%M}"
    if args.clear:
        if args.day_start or args.day_end:
            raise CalendarError("--clear goes without --day-start/--day-end")
        had = await clear_center_window(conn, place)
        log.info("calendar.window_cleared", center=place.center, actor=rt.actor)
        print(f"{place.center}: the default day window {default}"
              + ("" if had else " (it had no window of its own)"))
        return 0
    if not (args.day_start and args.day_end):
        raise CalendarError("give both --day-start and --day-end (HH:MM), or --clear")
    start, end = parse_hhmm(args.day_start, "--day-start"), parse_hhmm(args.day_end, "--day-end")
    await set_center_window(conn, place, start, end, actor=rt.actor)
    log.info("calendar.window_set", center=place.center, day_start=f"{start:%H:%M}",
             day_end=f"{end:%H:%M}", actor=rt.actor)
    print(f"{place.center}: day service {start:%H:%M}–{end:%H:%M} on working days (default {default})")
    return 0


_ACTIONS = {"show": _show, "day": _day, "import": _import, "close": _close, "reopen": _reopen,
            "hours": _hours}
