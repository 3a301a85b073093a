"""The working-day calendar: the pure rules (routing.calendar), the shipped State Council calendars,
the store and its CSV import (routing.calendar_store), and `hotline calendar` through the real CLI."""

from __future__ import annotations

import asyncio
import csv
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from hotline.runtime import os_actor
from routing.calendar import (
    CLOSED,
    MAKEUP,
    PUBLIC_HOLIDAY,
    WEEKEND,
    WORKING,
    CenterHours,
    Closure,
    SpecialDay,
    WorkingCalendar,
)
from routing.calendar_store import (
    CalendarError,
    CalendarFile,
    CalendarNotFound,
    CalendarRejected,
    clear_center_window,
    close_day,
    find_center,
    find_district,
    import_calendar,
    load_calendar,
    parse_calendar_csv,
    read_calendar_file,
    reopen_day,
    set_center_window,
    shipped_calendar_files,
    write_year,
)
from routing.chain import RoutingData, route_chain
from tests.conftest import run_cli

SH = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parent.parent

# The notices as published (blocks of days off, and the make-up working days of each block),
# written independently of the CSV files so that a typo in either is caught.
NOTICES = {
    2025: ("国办发明电〔2024〕12号", [
        ("元旦", "01-01", "01-01", []),
        ("春节", "01-28", "02-04", ["01-26", "02-08"]),
        ("清明节", "04-04", "04-06", []),
        ("劳动节", "05-01", "05-05", ["04-27"]),
        ("端午节", "05-31", "06-02", []),
        ("国庆节、中秋节", "10-01", "10-08", ["09-28", "10-11"]),
    ]),
    2026: ("国办发明电〔2025〕7号", [
        ("元旦", "01-01", "01-03", ["01-04"]),
        ("春节", "02-15", "02-23", ["02-14", "02-28"]),
        ("清明节", "04-04", "04-06", []),
        ("劳动节", "05-01", "05-05", ["05-09"]),
        ("端午节", "06-19", "06-21", []),
        ("中秋节", "09-25", "09-27", []),
        ("国庆节", "10-01", "10-07", ["09-20", "10-10"]),
    ]),
}


def notice_days(year: int) -> list[tuple[date, str, str]]:
    days = []
    for name, first, last, workdays in NOTICES[year][1]:
        d, end = date.fromisoformat(f"{year}-{first}"), date.fromisoformat(f"{year}-{last}")
        while d <= end:
            days.append((d, "holiday", name))
            d += timedelta(days=1)
        days += [(date.fromisoformat(f"{year}-{w}"), "workday", f"{name}调休上班") for w in workdays]
    return sorted(days)


def csv_days(year: int) -> list[tuple[date, str, str]]:
    path = ROOT / "routing" / "data" / "calendar" / f"{year}.csv"
    with path.open(encoding="utf-8", newline="") as f:
        return [(date.fromisoformat(r["date"]), r["kind"], r["name"]) for r in csv.DictReader(f)]


def at(text: str) -> datetime:
    """A local (Asia/Shanghai) instant."""
    return datetime.fromisoformat(text).replace(tzinfo=SH)


# 滨海新区 (district 1): 北塘街 (10) with its own window 07:30–17:30, closed 2026-12-01 for training
# and on the make-up Sunday 2026-09-20; 古林街 (11) on the default window. The whole district is
# closed 2026-12-02. 西青区 (district 2) has 杨柳青 (20).
SHIPPED = [d for f in shipped_calendar_files() for d in read_calendar_file(f).days]
CENTERS = [CenterHours(10, "北塘街", 1, time(7, 30), time(17, 30)), CenterHours(11, "古林街", 1),
           CenterHours(20, "杨柳青", 2)]
CLOSURES = [Closure(date(2026, 12, 1), "培训", center_id=10), Closure(date(2026, 9, 20), "停电", center_id=10),
            Closure(date(2026, 12, 2), "全区培训", district_id=1)]
CAL = WorkingCalendar(SHIPPED, CLOSURES, CENTERS, districts={1: "滨海新区", 2: "西青区"})
ONE_DISTRICT = WorkingCalendar(SHIPPED, CLOSURES, CENTERS[:2], districts={1: "滨海新区"})


# --- the pure rules -------------------------------------------------------------------------------

@pytest.mark.parametrize(("clock", "day", "reason"), [
    ("07:59:59", False, "2026-11-24 07:59 is outside the day window 08:00–17:00 → night service"),
    ("08:00:00", True, "2026-11-24 08:00 is within the day window 08:00–17:00 → day service"),
    ("16:59:59", True, "2026-11-24 16:59 is within the day window 08:00–17:00 → day service"),
    ("17:00:00", False, "2026-11-24 17:00 is outside the day window 08:00–17:00 → night service"),
])
def test_ordinary_weekday_window_edges(clock: str, day: bool, reason: str) -> None:
    service = CAL.day_service(at(f"2026-11-24T{clock}"), 11)  # Tuesday, 古林街: the default window
    assert (service.day, service.reason, service.kind) == (day, reason, WORKING)
    assert CAL.is_working_day(date(2026, 11, 24), 11)


def test_instants_are_judged_in_shanghai_time() -> None:
    utc = ZoneInfo("UTC")
    assert CAL.day_service(datetime(2026, 11, 24, 0, 0, tzinfo=utc), 11).day  # 08:00 in Shanghai
    assert not CAL.day_service(datetime(2026, 11, 23, 23, 59, tzinfo=utc), 11).day  # 07:59
    assert not CAL.day_service(datetime(2026, 11, 24, 9, 0, tzinfo=utc), 11).day  # 17:00
    with pytest.raises(ValueError, match="aware"):
        CAL.day_service(datetime(2026, 11, 24, 10, 0), 11)


@pytest.mark.parametrize(("when", "reason"), [
    ("2026-11-28T10:00", "Sat 2026-11-28 is a weekend day → night service"),
    ("2026-11-29T12:00", "Sun 2026-11-29 is a weekend day → night service"),
])
def test_ordinary_weekend_is_night_service(when: str, reason: str) -> None:
    service = CAL.day_service(at(when), 11)
    assert (service.day, service.reason, service.kind) == (False, reason, WEEKEND)


@pytest.mark.parametrize(("when", "name"), [
    ("2026-10-01T10:00", "国庆节"),        # Thursday
    ("2026-01-02T09:00", "元旦"),          # Friday
    ("2026-02-23T10:00", "春节"),          # Monday, the last day of 春节
    ("2026-09-25T10:00", "中秋节"),        # Friday
    ("2025-01-28T10:00", "春节"),          # Tuesday, 除夕
    ("2025-10-08T16:00", "国庆节、中秋节"),  # Wednesday
])
def test_public_holidays_are_night_service(when: str, name: str) -> None:
    service = CAL.day_service(at(when), 11)
    assert not service.day and service.kind == PUBLIC_HOLIDAY
    assert service.reason == f"{when[:10]} is a public holiday ({name}) → night service"
    assert not CAL.is_working_day(date.fromisoformat(when[:10]), 11)


@pytest.mark.parametrize(("when", "name"), [
    ("2026-09-20T10:00", "国庆节调休上班"),   # Sunday
    ("2026-02-14T08:00", "春节调休上班"),     # Saturday
    ("2026-01-04T16:59", "元旦调休上班"),     # Sunday
    ("2025-10-11T10:00", "国庆节、中秋节调休上班"),  # Saturday
])
def test_make_up_working_days_are_day_service(when: str, name: str) -> None:
    service = CAL.day_service(at(when), 11)
    assert service.day and service.kind == MAKEUP
    assert service.reason == f"{when[:10]} is a make-up working day ({name}) → day service 08:00–17:00"


def test_make_up_working_day_has_a_night_too() -> None:
    service = CAL.day_service(at("2026-09-20T17:00"), 11)
    assert not service.day
    assert service.reason == ("2026-09-20 is a make-up working day (国庆节调休上班), but 17:00 is outside "
                              "the day window 08:00–17:00 → night service")


def test_the_weekday_after_a_holiday_block_is_working_again() -> None:
    assert CAL.day_service(at("2026-10-08T10:00"), 11).day  # Thursday after 国庆节
    assert CAL.day_service(at("2026-02-24T10:00"), 11).day  # Tuesday after 春节


@pytest.mark.parametrize(("clock", "day"), [
    ("07:29:59", False), ("07:30:00", True), ("17:29:59", True), ("17:30:00", False),
])
def test_center_with_its_own_window(clock: str, day: bool) -> None:
    service = CAL.day_service(at(f"2026-11-24T{clock}"), 10)
    assert service.day is day
    where = "within" if day else "outside"
    assert service.reason == (f"2026-11-24 {clock[:5]} is {where} 北塘街's day window 07:30–17:30"
                              f" → {'day' if day else 'night'} service")
    # the other centers keep the default window
    assert CAL.day_service(at(f"2026-11-24T{clock}"), 11).day is (time(8) <= time.fromisoformat(clock) < time(17))


def test_center_window_on_a_make_up_day() -> None:
    service = CAL.day_service(at("2025-09-28T07:45"), 10)  # Sunday, 国庆节、中秋节调休上班
    assert service.day
    assert service.reason.endswith("→ day service 07:30–17:30 (北塘街's day window)")


def test_center_closure() -> None:
    service = CAL.day_service(at("2026-12-01T10:00"), 10)
    assert (service.day, service.kind) == (False, CLOSED)
    assert service.reason == "北塘街 is closed on 2026-12-01 (培训) → night service"
    assert CAL.day_service(at("2026-12-01T10:00"), 11).day  # only 北塘街
    assert not CAL.is_working_day(date(2026, 12, 1), 10) and CAL.is_working_day(date(2026, 12, 1), 11)


def test_a_closure_beats_a_make_up_working_day() -> None:
    assert not CAL.day_service(at("2026-09-20T10:00"), 10).day
    assert CAL.day_service(at("2026-09-20T10:00"), 11).day


def test_district_closure() -> None:
    reason = "滨海新区 (the whole district) is closed on 2026-12-02 (全区培训) → night service"
    for center in (10, 11):
        service = CAL.day_service(at("2026-12-02T10:00"), center)
        assert (service.day, service.reason) == (False, reason)
    assert CAL.day_service(at("2026-12-02T10:00"), 20).day  # 西青区 is open
    # an unknown caller: the only district there is, or the one named
    assert not ONE_DISTRICT.day_service(at("2026-12-02T10:00"), None).day
    assert CAL.day_service(at("2026-12-02T10:00"), None).day  # two districts: which one is unknown
    assert not CAL.day_service(at("2026-12-02T10:00"), None, district_id=1).day
    assert CAL.day_service(at("2026-12-02T10:00"), None, district_id=2).day


def test_a_public_holiday_is_explained_before_a_closure() -> None:
    cal = WorkingCalendar(SHIPPED, [Closure(date(2026, 10, 1), "培训", center_id=10)], CENTERS)
    assert cal.day_service(at("2026-10-01T10:00"), 10).reason == \
        "2026-10-01 is a public holiday (国庆节) → night service"


def test_a_year_without_data_is_an_ordinary_week_and_says_so() -> None:
    monday = CAL.day_service(at("2027-01-04T10:00"), 11)
    assert monday.day and not monday.known
    assert monday.reason == ("no calendar for 2027: treated as an ordinary week; "
                             "2027-01-04 10:00 is within the day window 08:00–17:00 → day service")
    new_year = CAL.day_service(at("2027-01-01T10:00"), 11)  # 元旦, but nobody imported 2027
    assert new_year.day and new_year.reason.startswith("no calendar for 2027: treated as an ordinary week")
    saturday = CAL.day_service(at("2027-01-02T10:00"), 11)
    assert saturday.reason == ("no calendar for 2027: treated as an ordinary week; "
                               "Sat 2027-01-02 is a weekend day → night service")
    assert CAL.day_service(at("2026-11-24T10:00"), 11).known
    assert CAL.years == {2025, 2026}
    assert CAL.missing_years(date(2026, 11, 23), date(2027, 2, 21)) == (2027,)
    assert CAL.missing_years(date(2024, 12, 1), date(2026, 12, 31)) == (2024,)
    assert CAL.missing_years(date(2026, 3, 1)) == ()


def test_day_summary() -> None:
    assert CAL.day(date(2026, 10, 1)).summary == "2026-10-01 is a public holiday (国庆节) → night service all day"
    assert CAL.day(date(2026, 9, 20), 11).summary == (
        "2026-09-20 is a make-up working day (国庆节调休上班) → day service 08:00–17:00, night service outside it")
    assert CAL.day(date(2026, 11, 24), 10).summary == (
        "Tue 2026-11-24 is a working day → day service 07:30–17:30 (北塘街's day window), "
        "night service outside it")


def test_calendar_refuses_inconsistent_data() -> None:
    with pytest.raises(ValueError, match="Saturday or Sunday"):
        WorkingCalendar([SpecialDay(date(2026, 10, 8), "workday", "国庆节调休上班")])
    with pytest.raises(ValueError, match="listed twice"):
        WorkingCalendar([SpecialDay(date(2026, 10, 1), "holiday", "国庆节")] * 2)
    with pytest.raises(ValueError, match="start must be before end"):
        WorkingCalendar(centers=[CenterHours(1, "北塘街", 1, time(17), time(8))])
    with pytest.raises(ValueError, match="start must be before end"):
        WorkingCalendar(day_start=time(17), day_end=time(8))


def test_the_route_chain_uses_the_calendar() -> None:
    data = RoutingData(calendar=CAL, tz=SH)
    holiday = route_chain(None, at("2026-10-01T10:00"), data)
    assert holiday.service == "night"
    assert holiday.reason.startswith("2026-10-01 is a public holiday (国庆节) → night service")
    assert route_chain(None, at("2026-09-20T10:00"), data).service == "day"


# --- the shipped calendars ----------------------------------------------------------------------

@pytest.mark.parametrize("year", [2025, 2026])
def test_shipped_files_are_the_notices(year: int) -> None:
    assert csv_days(year) == notice_days(year)
    parsed = read_calendar_file(ROOT / "routing" / "data" / "calendar" / f"{year}.csv")
    assert [(d.on, d.kind, d.name) for d in parsed.days] == notice_days(year)


def test_shipped_files_are_found_as_package_data() -> None:
    assert [p.name for p in shipped_calendar_files()] == ["2025.csv", "2026.csv"]
    assert {(d.on.year, d.kind) for d in SHIPPED} == {(y, k) for y in (2025, 2026) for k in ("holiday", "workday")}
    assert sum(d.kind == "holiday" for d in SHIPPED if d.on.year == 2026) == 33


async def test_the_migration_loaded_the_shipped_files(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch("SELECT on_date, kind, name, source FROM calendar_days ORDER BY on_date")
    assert [(r["on_date"], r["kind"], r["name"]) for r in rows] == csv_days(2025) + csv_days(2026)
    assert {r["on_date"].year: r["source"] for r in rows} == {y: NOTICES[y][0] for y in NOTICES}
    assert {r["source"] for r in rows} == {NOTICES[2025][0], NOTICES[2026][0]}


# --- reading a calendar file ------------------------------------------------------------------------

def rejected(text: str | bytes, file_name: str = "2026.csv") -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(CalendarRejected) as exc:
        parse_calendar_csv(data, file_name=file_name)
    return exc.value.problems


@pytest.mark.parametrize(("text", "problem"), [
    ("date,kind,name\n2026-10-01,holiday,国庆节\n2026-02-30,holiday,春节\n",
     "line 3: 2026-02-30 is not a date: February 2026 has 28 days"),
    ("date,kind,name\n2026-13-01,holiday,国庆节\n", "line 2: 2026-13-01 is not a date: there is no month 13"),
    ("date,kind,name\n10/01/2026,holiday,国庆节\n", "line 2: '10/01/2026' is not a date (YYYY-MM-DD)"),
    ("date,kind,name\n2026-10-01,vacation,国庆节\n",
     "line 2: kind 'vacation' is neither holiday (放假) nor workday (上班)"),
    ("date,kind,name\n2026-10-08,workday,国庆节调休上班\n",
     "line 2: 2026-10-08 is a Thursday: a make-up working day (workday) is a Saturday or Sunday"),
    ("date,kind,name\n2026-10-01,holiday,国庆节\n2026-10-02,holiday,国庆节\n2026-10-01,holiday,国庆节\n",
     "line 4: 2026-10-01 is listed twice (first on line 2)"),
    ("date,kind,name\n2026-12-31,holiday,元旦\n2027-01-01,holiday,元旦\n",
     "line 3: 2027-01-01 is in 2027, but this file is for 2026 (its file name); one file per year"),
    ("date,kind,name\n2026-10-01,holiday,\n", "line 2: no name"),
    ("date,name\n2026-10-01,国庆节\n", "line 1: missing column(s) kind; the header is date,kind,name"),
    ("", "the file is empty"),
    ("date,kind,name\n\n", "line 1: the file has no rows below its header"),
    ("date,kind,name\n\"2026-10-01,holiday,国庆节\n", "line 2: not readable as CSV: unexpected end of data"),
])
def test_bad_files_are_rejected_with_line_and_reason(text: str, problem: str) -> None:
    problems = rejected(text)
    assert any(p.startswith(problem) for p in problems), problems


def test_the_file_year_comes_from_the_first_row_without_a_year_in_the_name() -> None:
    problems = rejected("date,kind,name\n2025-10-01,holiday,国庆节\n2026-10-01,holiday,国庆节\n",
                        file_name="holidays.csv")
    assert problems == ["line 3: 2026-10-01 is in 2026, but this file is for 2025 "
                        "(its first row (line 2)); one file per year"]


def test_every_problem_is_reported_in_line_order() -> None:
    problems = rejected("date,kind,name\n2026-02-30,holiday,春节\n2026-10-01,holiday,国庆节\n"
                        "2026-10-05,workday,国庆节\n2026-10-01,假,国庆节\n")
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 4", "line 5", "line 5"]


def test_gbk_files_are_refused_with_advice() -> None:
    problems = rejected("date,kind,name\n2026-10-01,holiday,国庆节\n".encode("gbk"))
    assert problems[0].startswith("line 2: the file is not UTF-8 text")


def test_excel_files_are_read() -> None:
    # a byte-order mark, Chinese headers and kinds, Excel's dates, an extra column, blank lines
    text = "\ufeff日期,类型,名称,备注\r\n2026/10/1,放假,国庆节,\r\n,,,\r\n2026/10/10,上班,国庆节调休上班,周六\r\n"
    parsed = parse_calendar_csv(text.encode(), file_name="2026年放假安排.csv", source="通知")
    assert parsed.year == 2026
    assert parsed.days == (SpecialDay(date(2026, 10, 1), "holiday", "国庆节", "通知"),
                           SpecialDay(date(2026, 10, 10), "workday", "国庆节调休上班", "通知"))
    # a blank line still counts in the numbering
    assert rejected("date,kind,name\n\n2026-10-08,workday,x\n")[0].startswith("line 3:")


# --- the store -----------------------------------------------------------------------------------

@pytest.fixture
async def places(pool: asyncpg.Pool) -> dict[str, int]:
    district = await pool.fetchval("INSERT INTO districts (name) VALUES ('滨海新区') RETURNING id")
    ids = {"滨海新区": district}
    for name in ("北塘街", "古林街"):
        ids[name] = await pool.fetchval(
            "INSERT INTO centers (district_id, name) VALUES ($1, $2) RETURNING id", district, name)
    return ids


async def counts(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    return {t: await conn.fetchval(f"SELECT count(*) FROM {t}")  # noqa: S608 (fixed names)
            for t in ("calendar_days", "calendar_closures", "center_day_windows")}


async def test_load_calendar_from_the_database(pool: asyncpg.Pool, places: dict[str, int]) -> None:
    async with pool.acquire() as conn:
        beitang = await find_center(conn, "北塘街")
        await close_day(conn, date(2026, 12, 1), "培训", beitang, actor="test")
        await close_day(conn, date(2026, 12, 2), "全区培训", await find_district(conn, None), actor="test")
        await set_center_window(conn, beitang, time(7, 30), time(17, 30), actor="test")
        cal = await load_calendar(conn, tz=SH, day_start=time(8), day_end=time(17))
    b, g = places["北塘街"], places["古林街"]
    assert cal.years == {2025, 2026}
    assert cal.day_service(at("2026-10-01T10:00"), b).reason == "2026-10-01 is a public holiday (国庆节) → night service"
    assert cal.day_service(at("2026-09-20T10:00"), g).day
    assert cal.day_service(at("2026-11-24T07:45"), b).reason == \
        "2026-11-24 07:45 is within 北塘街's day window 07:30–17:30 → day service"
    assert not cal.day_service(at("2026-11-24T07:45"), g).day
    assert cal.day_service(at("2026-12-01T10:00"), b).reason == "北塘街 is closed on 2026-12-01 (培训) → night service"
    assert cal.day_service(at("2026-12-01T10:00"), g).day
    assert not cal.day_service(at("2026-12-02T10:00"), None).day  # the only district
    assert cal.day_service(at("2026-12-02T10:00"), g).reason == \
        "滨海新区 (the whole district) is closed on 2026-12-02 (全区培训) → night service"


async def test_closures_reopen_and_windows(pool: asyncpg.Pool, places: dict[str, int]) -> None:
    async with pool.acquire() as conn:
        beitang = await find_center(conn, "北塘街")
        assert await close_day(conn, date(2026, 12, 1), "培训", beitang) is None
        assert await close_day(conn, date(2026, 12, 1), "停电", beitang) == "培训"  # replaced, not doubled
        assert (await counts(conn))["calendar_closures"] == 1
        with pytest.raises(CalendarError, match="say why"):
            await close_day(conn, date(2026, 12, 3), "  ", beitang)
        assert await reopen_day(conn, date(2026, 12, 1), beitang) == "停电"
        with pytest.raises(CalendarNotFound, match="北塘街 is not closed on 2026-12-01"):
            await reopen_day(conn, date(2026, 12, 1), beitang)
        with pytest.raises(CalendarError, match="no center named '不存在'"):
            await find_center(conn, "不存在")
        with pytest.raises(CalendarError, match="on the hour or the half hour"):
            await set_center_window(conn, beitang, time(7, 45), time(17, 30))
        with pytest.raises(CalendarError, match="must be before"):
            await set_center_window(conn, beitang, time(17, 30), time(7, 30))
        await set_center_window(conn, beitang, time(7, 30), time(17, 30))
        await set_center_window(conn, beitang, time(7), time(16))
        assert await conn.fetchrow("SELECT day_start, day_end FROM center_day_windows") == (time(7), time(16))
        assert await clear_center_window(conn, beitang)
        assert not await clear_center_window(conn, beitang)
        await conn.execute("INSERT INTO districts (name) VALUES ('西青区')")
        with pytest.raises(CalendarError, match="several districts"):
            await find_district(conn, None)


async def test_the_schema_refuses_what_the_rules_forbid(pool: asyncpg.Pool, places: dict[str, int]) -> None:
    with pytest.raises(asyncpg.CheckViolationError):  # a make-up working day on a Thursday
        await pool.execute("INSERT INTO calendar_days VALUES ('2027-10-07', 'workday', '国庆节调休上班', '')")
    with pytest.raises(asyncpg.CheckViolationError):  # both scopes
        await pool.execute("INSERT INTO calendar_closures (on_date, district_id, center_id, reason)"
                           " VALUES ('2026-12-01', $1, $2, '培训')", places["滨海新区"], places["北塘街"])
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("INSERT INTO center_day_windows (center_id, day_start, day_end)"
                           " VALUES ($1, '17:30', '07:30')", places["北塘街"])
    await pool.execute("INSERT INTO calendar_closures (on_date, center_id, reason) VALUES ('2026-12-01', $1, 'a')",
                       places["北塘街"])
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute("INSERT INTO calendar_closures (on_date, center_id, reason) VALUES ('2026-12-01', $1, 'b')",
                           places["北塘街"])


async def test_calendar_changes_notify_routing_caches(pool: asyncpg.Pool, places: dict[str, int]) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    def hear(*args: object) -> None:
        heard.put_nowait(str(args[3]))

    async with pool.acquire() as listener:
        await listener.add_listener("hotline_routing", hear)
        async with pool.acquire() as conn:
            await close_day(conn, date(2026, 12, 1), "培训", await find_center(conn, "北塘街"))
        assert await asyncio.wait_for(heard.get(), 5) == "calendar_closures"
        await listener.remove_listener("hotline_routing", hear)


async def test_import_adds_and_replaces_a_year(pool: asyncpg.Pool, tmp_path: Path) -> None:
    new = tmp_path / "2027.csv"
    new.write_text("date,kind,name\n2027-01-01,holiday,元旦\n2027-02-06,workday,春节调休上班\n", encoding="utf-8")
    async with pool.acquire() as conn:
        done = await import_calendar(conn, new, source="国办发明电〔2026〕X号")
        assert (done.year, done.holidays, done.workdays, done.replaced) == (2027, 1, 1, 0)
        cal = await load_calendar(conn)
        assert cal.years == {2025, 2026, 2027}
        assert not cal.day_service(at("2027-01-01T10:00"), None).day
        assert cal.day_service(at("2027-02-06T10:00"), None).day  # a Saturday, 调休上班
        replacement = tmp_path / "2026.csv"
        replacement.write_text("date,kind,name\n2026-10-01,holiday,国庆节\n", encoding="utf-8")
        done = await import_calendar(conn, replacement)
        assert (done.year, done.replaced) == (2026, 39)
        rows = await conn.fetch("SELECT on_date, source FROM calendar_days WHERE on_date >= '2026-01-01'"
                                " AND on_date < '2027-01-01'")
        assert [(r["on_date"], r["source"]) for r in rows] == [(date(2026, 10, 1), "2026.csv")]
        assert await conn.fetchval("SELECT count(*) FROM calendar_days WHERE on_date < '2026-01-01'") == 33


async def test_a_rejected_import_writes_nothing(pool: asyncpg.Pool, tmp_path: Path) -> None:
    bad = tmp_path / "2026.csv"
    # the good rows come first: nothing of them may be written either
    bad.write_text("date,kind,name\n2026-10-01,holiday,国庆节\n2026-10-02,holiday,国庆节\n"
                   "2026-02-30,holiday,春节\n", encoding="utf-8")
    async with pool.acquire() as conn:
        before = await counts(conn)
        rows_before = await conn.fetch("SELECT * FROM calendar_days ORDER BY on_date")
        with pytest.raises(CalendarRejected) as exc:
            await import_calendar(conn, bad)
        assert exc.value.problems == ["line 4: 2026-02-30 is not a date: February 2026 has 28 days"]
        assert await counts(conn) == before
        assert await conn.fetch("SELECT * FROM calendar_days ORDER BY on_date") == rows_before
        with pytest.raises(CalendarRejected, match="there is no such file"):
            await import_calendar(conn, tmp_path / "missing.csv")


async def test_a_year_the_database_refuses_halfway_is_rolled_back(pool: asyncpg.Pool) -> None:
    # past the file checks (written directly): the old 2026 is deleted, then the CHECK on
    # make-up working days refuses the second row — the old 2026 must still be there
    refused = CalendarFile(2026, (SpecialDay(date(2026, 10, 1), "holiday", "国庆节"),
                                  SpecialDay(date(2026, 10, 8), "workday", "国庆节调休上班")))
    async with pool.acquire() as conn:
        rows_before = await conn.fetch("SELECT * FROM calendar_days ORDER BY on_date")
        with pytest.raises(CalendarRejected, match="the database refused the rows, nothing was written"):
            await write_year(conn, refused)
        assert await conn.fetch("SELECT * FROM calendar_days ORDER BY on_date") == rows_before


# --- the CLI -------------------------------------------------------------------------------------

def stderr_lines(result) -> list[str]:  # noqa: ANN001
    """What the command said on stderr, without the JSON log lines."""
    return [line for line in result.stderr.splitlines() if not line.startswith("{")]


async def test_cli_show_and_day(cli_env: dict[str, str]) -> None:
    shown = run_cli(cli_env, "calendar", "show", "2026")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "2026: 33 public holiday(s), 6 make-up working day(s) — 国办发明电〔2025〕7号"
    assert "  2026-10-01 Thu  holiday  国庆节" in lines
    assert "  2026-09-20 Sun  workday  国庆节调休上班" in lines
    assert "closures in 2026: none" in lines
    missing = run_cli(cli_env, "calendar", "show", "2027")
    assert missing.returncode == 1
    assert "no calendar for 2027" in missing.stderr

    holiday = run_cli(cli_env, "calendar", "day", "2026-10-01")
    assert holiday.returncode == 0, holiday.stderr
    assert holiday.stdout.strip() == "2026-10-01 is a public holiday (国庆节) → night service all day"
    makeup = run_cli(cli_env, "calendar", "day", "2026-09-20T10:00")
    assert makeup.stdout.strip() == "2026-09-20 is a make-up working day (国庆节调休上班) → day service 08:00–17:00"


async def test_cli_close_hours_reopen(cli_env: dict[str, str], places: dict[str, int], pool: asyncpg.Pool) -> None:
    closed = run_cli(cli_env, "calendar", "close", "2026-12-01", "--reason", "培训", "--center", "北塘街")
    assert closed.returncode == 0, closed.stderr
    assert closed.stdout.splitlines() == ["北塘街 closed on 2026-12-01 (培训)",
                                          "  北塘街 is closed on 2026-12-01 (培训) → night service all day"]
    me = os_actor()  # who the system knows, not the HOTLINE_ACTOR claim
    assert await pool.fetchval("SELECT created_by FROM calendar_closures") == me
    district = run_cli(cli_env, "calendar", "close", "2026-12-02", "--reason", "全区培训")
    assert district.returncode == 0, district.stderr
    assert district.stdout.startswith("滨海新区 (the whole district) closed on 2026-12-02 (全区培训)")
    shown = run_cli(cli_env, "calendar", "show", "2026")
    assert f"  2026-12-01 Tue  北塘街: 培训  (by {me})" in shown.stdout.splitlines()
    assert f"  2026-12-02 Wed  滨海新区 (the whole district): 全区培训  (by {me})" in shown.stdout.splitlines()

    day = run_cli(cli_env, "calendar", "day", "2026-12-01T10:00", "--center", "北塘街")
    assert day.stdout.strip() == "北塘街 is closed on 2026-12-01 (培训) → night service"
    other = run_cli(cli_env, "calendar", "day", "2026-12-01T10:00", "--center", "古林街")
    assert other.stdout.strip() == "2026-12-01 10:00 is within the day window 08:00–17:00 → day service"

    hours = run_cli(cli_env, "calendar", "hours", "--center", "北塘街", "--day-start", "07:30", "--day-end", "17:30")
    assert hours.returncode == 0, hours.stderr
    assert hours.stdout.strip() == "北塘街: day service 07:30–17:30 on working days (default 08:00–17:00)"
    early = run_cli(cli_env, "calendar", "day", "2026-11-24T07:45", "--center", "北塘街")
    assert early.stdout.strip() == "2026-11-24 07:45 is within 北塘街's day window 07:30–17:30 → day service"
    cleared = run_cli(cli_env, "calendar", "hours", "--center", "北塘街", "--clear")
    assert cleared.returncode == 0 and await pool.fetchval("SELECT count(*) FROM center_day_windows") == 0

    reopened = run_cli(cli_env, "calendar", "reopen", "2026-12-01", "--center", "北塘街")
    assert reopened.returncode == 0, reopened.stderr
    assert reopened.stdout.splitlines()[0] == "北塘街 reopened on 2026-12-01 (was closed: 培训)"
    again = run_cli(cli_env, "calendar", "reopen", "2026-12-01", "--center", "北塘街")
    assert again.returncode == 1
    assert stderr_lines(again) == ["hotline: 北塘街 is not closed on 2026-12-01"]


@pytest.mark.parametrize(("args", "message"), [
    (("close", "2026-02-30", "--reason", "培训"),
     "hotline: error: 2026-02-30 is not a date: February 2026 has 28 days"),
    (("hours", "--center", "北塘街", "--day-start", "17:30", "--day-end", "07:30"),
     "hotline: error: --day-start 17:30 must be before --day-end 07:30"),
    (("hours", "--center", "北塘街", "--day-start", "7.30", "--day-end", "17:30"),
     "hotline: error: --day-start: '7.30' is not a time of day (HH:MM, e.g. 07:30)"),
    (("day", "2026-10-01Tten"), "hotline: error: cannot read '2026-10-01Tten' as a date"),
    (("show", "20226"), "hotline: error: '20226' is not a year (2000–2100)"),
])
async def test_cli_errors_are_one_line_exit_2(cli_env: dict[str, str], places: dict[str, int],
                                              pool: asyncpg.Pool, args: tuple[str, ...], message: str) -> None:
    before = await counts(pool)
    result = run_cli(cli_env, "calendar", *args)
    assert result.returncode == 2, result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert await counts(pool) == before


async def test_cli_import(cli_env: dict[str, str], pool: asyncpg.Pool, tmp_path: Path) -> None:
    bad = tmp_path / "2027.csv"
    bad.write_text("date,kind,name\n2027-01-01,holiday,元旦\n2027-02-30,holiday,春节\n2027-10-08,workday,x\n",
                   encoding="utf-8")
    before = await counts(pool)
    result = run_cli(cli_env, "calendar", "import", str(bad))
    assert result.returncode == 2
    assert stderr_lines(result) == [
        f"hotline: {bad}: rejected, nothing was imported:",
        "  line 3: 2027-02-30 is not a date: February 2027 has 28 days",
        "  line 4: 2027-10-08 is a Friday: a make-up working day (workday) is a Saturday or Sunday; "
        "weekdays are working days anyway",
    ]
    assert await counts(pool) == before
    good = tmp_path / "2027-good.csv"
    good.write_text("date,kind,name\n2027-01-01,holiday,元旦\n", encoding="utf-8")
    done = run_cli(cli_env, "calendar", "import", str(good), "--source", "国办发明电〔2026〕X号")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"imported 2027: 1 public holiday(s), 0 make-up working day(s) from {good} (a new year)"
    assert await pool.fetchval("SELECT source FROM calendar_days WHERE on_date = '2027-01-01'") == "国办发明电〔2026〕X号"
