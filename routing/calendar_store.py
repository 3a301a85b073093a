"""The working-day calendar in PostgreSQL (routing/migrations/0006_calendar.sql).

- `load_calendar` builds a routing.calendar.WorkingCalendar in two queries (dated rows: special
  days and closures; places: districts, centers and their own day windows).
- `import_calendar` adds or replaces one year from a CSV file `date,kind,name` (docs/calendar.md):
  every row is checked first and ALL problems are reported with their line numbers (the header
  is line 1); only a file without a single problem is written, in one transaction.
- `close_day` / `reopen_day` keep local closures, `set_center_window` / `clear_center_window` a
  center's own day window.

The published calendars (routing/data/calendar/YYYY.csv) are inserted by the migration itself,
so every database has them; a test keeps the two identical.
"""

from __future__ import annotations

import calendar as _gregorian
import csv
import io
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, time
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from routing.calendar import (
    DEFAULT_DAY_END,
    DEFAULT_DAY_START,
    DEFAULT_TZ,
    HOLIDAY,
    WEEKDAY_NAMES,
    WORKDAY,
    CenterHours,
    Closure,
    SpecialDay,
    WorkingCalendar,
)

# What a file may say in its header and kind column (Excel sheets are often in Chinese).
_HEADERS = {"date": ("date", "日期"), "kind": ("kind", "类型"), "name": ("name", "名称")}
_KIND_OF = {"holiday": HOLIDAY, "放假": HOLIDAY, "workday": WORKDAY, "上班": WORKDAY}
_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
_YEAR_IN_NAME = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_HHMM = re.compile(r"(\d{1,2}):(\d{2})")
FIRST_YEAR, LAST_YEAR = 2000, 2100  # what a calendar year may be (typos like 20026 are caught)


class CalendarError(Exception):
    """A calendar change that cannot be made; the message (one line) says why."""


class CalendarNotFound(CalendarError):
    """Nothing to show or undo (exit code 1 in the CLI)."""


class CalendarRejected(CalendarError):
    """A calendar file with problems; nothing was written. `problems`: "line 7: …" each."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        shown = "; ".join(self.problems[:3]) + (" …" if len(self.problems) > 3 else "")
        super().__init__(f"nothing was imported, {len(self.problems)} problem(s): {shown}")


# --- reading -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CalendarFile:
    year: int
    days: tuple[SpecialDay, ...]  # in date order

    @property
    def holidays(self) -> int:
        return sum(d.kind == HOLIDAY for d in self.days)

    @property
    def workdays(self) -> int:
        return sum(d.kind == WORKDAY for d in self.days)


def shipped_calendar_files() -> list[Path]:
    """The published calendars this release ships, routing/data/calendar/YYYY.csv."""
    folder = Path(str(resources.files("routing") / "data" / "calendar"))
    return sorted(folder.glob("*.csv"))


def read_calendar_file(path: Path, *, source: str | None = None) -> CalendarFile:
    """Parse and check a calendar file; CalendarRejected lists every problem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CalendarRejected(["there is no such file"]) from None
    except OSError as exc:
        raise CalendarRejected([f"cannot read the file: {exc.strerror or exc}"]) from None
    return parse_calendar_csv(data, file_name=path.name, source=path.name if source is None else source)


def _records(data: bytes) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank CSV record."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CalendarRejected([
            f"line {line}: the file is not UTF-8 text (an Excel sheet saved as plain CSV is GBK): "
            "save it again as \"CSV UTF-8 (逗号分隔)\""]) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    line = 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                yield line, fields
            line = reader.line_num + 1
    except csv.Error as exc:
        raise CalendarRejected([f"line {line}: not readable as CSV: {exc}"]) from None


def parse_date(text: str) -> date:
    """YYYY-MM-DD (or YYYY/M/D as Excel writes it); ValueError saying why not."""
    match = _DATE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text.strip()!r} is not a date (YYYY-MM-DD)")
    y, m, d = (int(g) for g in match.groups())
    if not 1 <= m <= 12:
        raise ValueError(f"{text.strip()} is not a date: there is no month {m}")
    last = _gregorian.monthrange(y, m)[1]
    if not 1 <= d <= last:
        raise ValueError(f"{text.strip()} is not a date: {_gregorian.month_name[m]} {y} has {last} days")
    return date(y, m, d)


def parse_calendar_csv(data: bytes, *, file_name: str = "", source: str = "") -> CalendarFile:
    """Check every row of a calendar file for one year and return it, or raise CalendarRejected
    with every problem found (line numbers count the header as line 1).

    The file's year is the 4-digit year in its name (2026.csv, holidays_2026.csv), else the year
    of its first row; a row of another year is a problem.
    """
    records = _records(data)
    first = next(records, None)
    if first is None:
        raise CalendarRejected(["the file is empty: expected a header date,kind,name and one row per day"])
    header_line, header = first
    positions: dict[str, int] = {}
    problems: list[tuple[int, str]] = []
    for i, title in enumerate(header):
        key = next((k for k, names in _HEADERS.items() if title.strip().casefold() in names), None)
        if key is None:
            continue  # a column we do not read (备注, …)
        if key in positions:
            problems.append((header_line, f"two {key} columns"))
        positions[key] = i
    missing = [k for k in _HEADERS if k not in positions]
    if missing:
        raise CalendarRejected([f"line {header_line}: missing column(s) {', '.join(missing)}; "
                                f"the header is date,kind,name"] + [f"line {n}: {p}" for n, p in problems])

    name_year = _YEAR_IN_NAME.search(Path(file_name).stem) if file_name else None
    year: int | None = int(name_year.group(1)) if name_year else None
    year_from = "its file name" if name_year else ""
    seen: dict[date, int] = {}
    days: list[SpecialDay] = []
    rows = 0
    for line, fields in records:
        rows += 1

        def cell(key: str, fields: list[str] = fields) -> str:
            i = positions[key]
            return fields[i].strip() if i < len(fields) else ""

        ok = True
        try:
            on = parse_date(cell("date"))
        except ValueError as exc:
            problems.append((line, str(exc)))
            on, ok = None, False
        kind_text = cell("kind")
        kind = _KIND_OF.get(kind_text.casefold())
        if kind is None:
            problems.append((line, f"kind {kind_text!r} is neither holiday (放假) nor workday (上班)"))
            ok = False
        name = cell("name")
        if not name:
            problems.append((line, "no name (the notice's name of the holiday, e.g. 国庆节)"))
            ok = False
        if on is not None:
            if year is None:
                year, year_from = on.year, f"its first row (line {line})"
            if on.year != year:
                problems.append((line, f"{on} is in {on.year}, but this file is for {year} ({year_from}); "
                                       "one file per year"))
                ok = False
            if kind == WORKDAY and on.weekday() < 5:
                problems.append((line, f"{on} is a {_gregorian.day_name[on.weekday()]}: a make-up working "
                                       "day (workday) is a Saturday or Sunday; weekdays are working days anyway"))
                ok = False
            if on in seen:
                problems.append((line, f"{on} is listed twice (first on line {seen[on]})"))
                ok = False
            else:
                seen[on] = line
        if ok and on is not None and kind is not None:
            days.append(SpecialDay(on, kind, name, source))
    if rows == 0 and not problems:
        problems.append((header_line, "the file has no rows below its header"))
    if year is not None and not FIRST_YEAR <= year <= LAST_YEAR:
        problems.append((header_line, f"{year} ({year_from}) is not a plausible calendar year"))
    if problems:
        problems.sort(key=lambda p: p[0])
        raise CalendarRejected([f"line {n}: {p}" for n, p in problems])
    assert year is not None
    return CalendarFile(year, tuple(sorted(days, key=lambda d: d.on)))


# --- loading -------------------------------------------------------------------------------------

# Special days and closures: both are dated rows, one round trip.
_DATED_SQL = """
SELECT on_date, kind, name, source, NULL::integer AS center_id, NULL::integer AS district_id
FROM calendar_days
UNION ALL
SELECT on_date, 'closure', reason, '', center_id, district_id FROM calendar_closures
"""
# Districts, their centers and each center's own window (a district without centers: one row
# with NULL center).
_PLACES_SQL = """
SELECT d.id AS district_id, d.name AS district, c.id AS center_id, c.name AS center,
       w.day_start, w.day_end
FROM districts d
LEFT JOIN centers c ON c.district_id = d.id
LEFT JOIN center_day_windows w ON w.center_id = c.id
"""


async def load_calendar(conn: asyncpg.Connection, *, tz: ZoneInfo = DEFAULT_TZ,
                        day_start: time = DEFAULT_DAY_START,
                        day_end: time = DEFAULT_DAY_END) -> WorkingCalendar:
    """The whole calendar as it is in the database now, with the default window from config."""
    special: list[SpecialDay] = []
    closures: list[Closure] = []
    for r in await conn.fetch(_DATED_SQL):
        if r["kind"] == "closure":
            closures.append(Closure(r["on_date"], r["name"], r["center_id"], r["district_id"]))
        else:
            special.append(SpecialDay(r["on_date"], r["kind"], r["name"], r["source"]))
    districts: dict[int, str] = {}
    centers: list[CenterHours] = []
    for r in await conn.fetch(_PLACES_SQL):
        districts[r["district_id"]] = r["district"]
        if r["center_id"] is not None:
            centers.append(CenterHours(r["center_id"], r["center"], r["district_id"],
                                       r["day_start"], r["day_end"]))
    return WorkingCalendar(special, closures, centers, districts=districts, tz=tz,
                           day_start=day_start, day_end=day_end)


def calendar_loader(tz: ZoneInfo = DEFAULT_TZ, day_start: time = DEFAULT_DAY_START,
                    day_end: time = DEFAULT_DAY_END) -> Callable[[asyncpg.Connection], Awaitable[WorkingCalendar]]:
    """A routing.snapshot.CalendarLoader: `await loader(conn)` → WorkingCalendar."""

    async def load(conn: asyncpg.Connection) -> WorkingCalendar:
        return await load_calendar(conn, tz=tz, day_start=day_start, day_end=day_end)

    return load


# --- importing -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportedYear:
    year: int
    holidays: int
    workdays: int
    replaced: int  # rows of that year there were before (0: a new year)


async def import_calendar(conn: asyncpg.Connection, path: Path, *, source: str | None = None) -> ImportedYear:
    """Add or replace the year of a calendar file, all or nothing (CalendarRejected: nothing
    was written). `source` is recorded per row; default: the file's name."""
    parsed = read_calendar_file(path, source=source)
    return await write_year(conn, parsed)


async def write_year(conn: asyncpg.Connection, parsed: CalendarFile) -> ImportedYear:
    """Replace the special days of `parsed.year` with `parsed.days`, in one transaction."""
    first, last = date(parsed.year, 1, 1), date(parsed.year, 12, 31)
    try:
        async with conn.transaction():
            before = await conn.fetchval(
                "SELECT count(*) FROM calendar_days WHERE on_date BETWEEN $1 AND $2", first, last)
            await conn.execute("DELETE FROM calendar_days WHERE on_date BETWEEN $1 AND $2", first, last)
            await conn.execute(
                "INSERT INTO calendar_days (on_date, kind, name, source)"
                " SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[])",
                [d.on for d in parsed.days], [d.kind for d in parsed.days],
                [d.name for d in parsed.days], [d.source for d in parsed.days])
    except asyncpg.PostgresError as exc:
        raise CalendarRejected([f"the database refused the rows, nothing was written: {exc.args[0]}"]) from exc
    return ImportedYear(parsed.year, parsed.holidays, parsed.workdays, before)


# --- places, closures, windows -------------------------------------------------------------------

@dataclass(frozen=True)
class Place:
    """A closure's or window's scope: a center, or a whole district (center_id None)."""

    district_id: int
    district: str
    center_id: int | None = None
    center: str | None = None

    @property
    def title(self) -> str:
        return self.center if self.center else f"{self.district} (the whole district)"


async def find_center(conn: asyncpg.Connection, name: str) -> Place:
    rows = await conn.fetch(
        "SELECT c.id, c.name, c.district_id, d.name AS district FROM centers c"
        " JOIN districts d ON d.id = c.district_id WHERE c.name = $1 ORDER BY c.id", name.strip())
    if not rows:
        raise CalendarNotFound(f"no center named {name.strip()!r}")
    if len(rows) > 1:
        raise CalendarError(f"several centers are named {name.strip()!r} (in "
                            f"{', '.join(r['district'] for r in rows)})")
    r = rows[0]
    return Place(r["district_id"], r["district"], r["id"], r["name"])


async def find_district(conn: asyncpg.Connection, name: str | None) -> Place:
    """The named district, or the only one in the database when `name` is None."""
    if name is not None:
        row = await conn.fetchrow("SELECT id, name FROM districts WHERE name = $1", name.strip())
        if row is None:
            raise CalendarNotFound(f"no district named {name.strip()!r}")
        return Place(row["id"], row["name"])
    rows = await conn.fetch("SELECT id, name FROM districts ORDER BY id LIMIT 6")
    if not rows:
        raise CalendarError("there is no district in the database yet (load the directory first)")
    if len(rows) > 1:
        raise CalendarError(f"there are several districts ({', '.join(r['name'] for r in rows[:5])}"
                            f"{', …' if len(rows) > 5 else ''}): name one with --district")
    return Place(rows[0]["id"], rows[0]["name"])


def _scope(place: Place) -> tuple[str, int]:
    return ("center_id", place.center_id) if place.center_id is not None else ("district_id", place.district_id)


async def close_day(conn: asyncpg.Connection, on: date, reason: str, place: Place, *,
                    actor: str = "") -> str | None:
    """Close `place` on `on`; return the earlier reason when it was closed already (replaced)."""
    reason = reason.strip()
    if not reason:
        raise CalendarError("--reason: say why the day is closed (e.g. 培训, 停电)")
    column, value = _scope(place)
    async with conn.transaction():
        # column is one of two fixed names (_scope), never user text.
        earlier = await conn.fetchval(
            f"SELECT reason FROM calendar_closures WHERE {column} = $1 AND on_date = $2 FOR UPDATE",  # noqa: S608
            value, on)
        if earlier is not None:
            await conn.execute(
                f"UPDATE calendar_closures SET reason = $3, created_by = $4, created_at = now()"  # noqa: S608
                f" WHERE {column} = $1 AND on_date = $2", value, on, reason, actor)
        else:
            await conn.execute(
                f"INSERT INTO calendar_closures ({column}, on_date, reason, created_by)"  # noqa: S608
                " VALUES ($1, $2, $3, $4)", value, on, reason, actor)
    return earlier


async def reopen_day(conn: asyncpg.Connection, on: date, place: Place) -> str:
    """Remove the closure of `place` on `on`; return its reason (CalendarNotFound if none)."""
    column, value = _scope(place)
    reason = await conn.fetchval(
        f"DELETE FROM calendar_closures WHERE {column} = $1 AND on_date = $2 RETURNING reason",  # noqa: S608
        value, on)
    if reason is None:
        raise CalendarNotFound(f"{place.title} is not closed on {on}")
    return reason


def parse_hhmm(text: str, what: str) -> time:
    match = _HHMM.fullmatch(text.strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise CalendarError(f"{what}: {text.strip()!r} is not a time of day (HH:MM, e.g. 07:30)")
    return time(int(match.group(1)), int(match.group(2)))


async def set_center_window(conn: asyncpg.Connection, place: Place, start: time, end: time, *,
                            actor: str = "") -> None:
    """Give the center its own day window [start, end)."""
    if place.center_id is None:
        raise CalendarError("a day window is set per center")
    if not start < end:
        raise CalendarError(f"--day-start {start:%H:%M} must be before --day-end {end:%H:%M}")
    for t, what in ((start, "--day-start"), (end, "--day-end")):
        # `hotline roster check` finds gaps exactly because windows open and close on half hours.
        if t.minute not in (0, 30) or t.second:
            raise CalendarError(f"{what} {t:%H:%M}: day windows open and close on the hour or the half hour")
    await conn.execute(
        "INSERT INTO center_day_windows (center_id, day_start, day_end, set_by) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (center_id) DO UPDATE SET day_start = EXCLUDED.day_start,"
        " day_end = EXCLUDED.day_end, set_by = EXCLUDED.set_by, set_at = now()",
        place.center_id, start, end, actor)


async def clear_center_window(conn: asyncpg.Connection, place: Place) -> bool:
    """Back to the default window; False when the center had none of its own."""
    done = await conn.execute("DELETE FROM center_day_windows WHERE center_id = $1", place.center_id)
    return done != "DELETE 0"


# --- listing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClosureRow:
    on: date
    place: str
    reason: str
    by: str


async def closures_in_year(conn: asyncpg.Connection, year: int) -> list[ClosureRow]:
    rows = await conn.fetch(
        """SELECT cl.on_date, cl.reason, cl.created_by, c.name AS center, d.name AS district
           FROM calendar_closures cl
           LEFT JOIN centers c ON c.id = cl.center_id
           LEFT JOIN districts d ON d.id = coalesce(cl.district_id, c.district_id)
           WHERE cl.on_date BETWEEN $1 AND $2
           ORDER BY cl.on_date, cl.center_id NULLS FIRST, c.name""",
        date(year, 1, 1), date(year, 12, 31))
    return [ClosureRow(r["on_date"], r["center"] or f"{r['district']} (the whole district)", r["reason"],
                       r["created_by"]) for r in rows]


def describe_day(d: SpecialDay) -> str:
    return f"{d.on} {WEEKDAY_NAMES[d.on.weekday()]}  {d.kind:<7}  {d.name}"


async def center_windows(conn: asyncpg.Connection) -> list[tuple[str, time, time]]:
    """(center, start, end) of every center with its own day window, by name."""
    rows = await conn.fetch(
        "SELECT c.name, w.day_start, w.day_end FROM center_day_windows w"
        " JOIN centers c ON c.id = w.center_id ORDER BY c.name")
    return [(r["name"], r["day_start"], r["day_end"]) for r in rows]


async def place_in_district(conn: asyncpg.Connection, district_id: int, center_id: int | None) -> Place:
    """The district itself (center_id None) or one of its centers; CalendarNotFound otherwise."""
    row = await conn.fetchrow(
        "SELECT d.id AS district_id, d.name AS district, c.id AS center_id, c.name AS center"
        " FROM districts d LEFT JOIN centers c ON c.district_id = d.id AND c.id = $2"
        " WHERE d.id = $1", district_id, center_id)
    if row is None or (center_id is not None and row["center_id"] is None):
        raise CalendarNotFound(f"no center {center_id} in district {district_id}")
    return Place(row["district_id"], row["district"], row["center_id"], row["center"])


@dataclass(frozen=True)
class DistrictClosure:
    on: date
    center_id: int | None  # None: the whole district
    place: str
    reason: str
    by: str


async def district_closures(conn: asyncpg.Connection, district_id: int, first: date,
                            last: date) -> list[DistrictClosure]:
    """Closures of a district and its centers from `first` to `last`, in date order."""
    rows = await conn.fetch(
        """SELECT cl.on_date, cl.center_id, cl.reason, cl.created_by, c.name AS center, d.name AS district
           FROM calendar_closures cl
           LEFT JOIN centers c ON c.id = cl.center_id
           JOIN districts d ON d.id = coalesce(cl.district_id, c.district_id)
           WHERE d.id = $1 AND cl.on_date BETWEEN $2 AND $3
           ORDER BY cl.on_date, cl.center_id NULLS FIRST, c.name""", district_id, first, last)
    return [DistrictClosure(r["on_date"], r["center_id"], r["center"] or f"{r['district']}（全区）",
                            r["reason"], r["created_by"]) for r in rows]
