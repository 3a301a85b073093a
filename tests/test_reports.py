"""recordings/reports.py: the report figures, computed by hand over known calls and tasks.

The week of Monday 2026-11-23 (Asia/Shanghai). Calls:

  call  when (SH)        group              outcome                 rung            wait
  c1    Mon 09:00        team A (center 1)  connected by doctor     doctor          10 s
  c2    Mon 10:00        team A             connected by assistant  doctor, asst.   30 s
  c3    Mon 11:00        team A             missed                  doctor, asst.
  c4    Mon 12:00        team A             abandoned               doctor
  c5    Mon 23:30        team A             connected by doctor     doctor          20 s
  c6    Tue 00:30        team A             connected by doctor     (nobody rung)   40 s
  c7    Mon 14:00        team 2 (center 1)  connected by doctor 2   doctor 2         5 s
  c8    Mon 15:00        other center       connected by other doc  other doc      100 s
  c9    Mon 16:00        other center       abandoned               other doc
  c10   Mon 17:00        district line only missed                  agent
  c11   Sun 22 23:59     team A             connected by doctor     doctor          50 s
  c12   Mon 30 00:00     team A             connected by doctor     doctor          60 s

c5 and c6 are on either side of midnight in Shanghai (both on Monday in UTC); c11 and c12 lie
just outside the report week.

Callback tasks (now = Tue 24 12:00):

  task  opened     behind  owner          outcome
  tk1   Mon 11:00  c3      doctor         done Mon 18:00 (due 19:00): on time
  tk2   Mon 12:00  c4      doctor         done Mon 20:00, exactly at its due time: on time
  tk3   Mon 17:00  c10     desk           done Tue 02:00 (due Tue 01:00): late
  tk4   Mon 16:00  c9      other doctor   open, due Tue 00:00: overdue
  tk5   Tue 09:00  —       assistant      open, due Tue 17:00: not yet due
  tk6   Mon 13:00  —       doctor         cancelled
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from recordings.reports import (
    FIGURES,
    ReportRow,
    bucket_of,
    bucket_starts,
    combined,
    report,
    series,
)
from store.pii import PiiVault
from tests.console_rows import Places, build_places, insert_call, insert_task

SH = ZoneInfo("Asia/Shanghai")
MON = date(2026, 11, 23)
SUN = date(2026, 11, 29)
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=SH)
H = timedelta(hours=1)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=SH)


@dataclass(frozen=True)
class Week:
    places: Places
    calls: dict[str, int]
    tasks: dict[str, int]


@pytest.fixture
async def week(pool: asyncpg.Pool, vault: PiiVault) -> Week:
    places = await build_places(pool, vault, week_of=date(2026, 11, 22))
    d = places.d
    team_a = {"district_id": d.district_id, "center_id": d.center_id, "team_id": d.team_id}
    team_2 = {"district_id": d.district_id, "center_id": d.center_id,
              "team_id": places.second_team_id}
    other = {"district_id": d.district_id, "center_id": places.other_center_id,
             "team_id": places.other_team_id}
    doc, asst, doc2, odoc = d.doctor_id, d.assistant_id, places.second_team_doctor_id, places.other_doctor_id
    c = {
        "c1": await insert_call(pool, offered_at=at(23, 9), disposition="connected",
                                answered_by=doc, wait_s=10, rung=(doc,), **team_a),
        "c2": await insert_call(pool, offered_at=at(23, 10), disposition="connected",
                                answered_by=asst, wait_s=30, rung=(doc, asst), **team_a),
        "c3": await insert_call(pool, offered_at=at(23, 11), disposition="missed",
                                rung=(doc, asst), **team_a),
        "c4": await insert_call(pool, offered_at=at(23, 12), disposition="abandoned",
                                rung=(doc,), **team_a),
        "c5": await insert_call(pool, offered_at=at(23, 23, 30), disposition="connected",
                                answered_by=doc, wait_s=20, rung=(doc,), **team_a),
        "c6": await insert_call(pool, offered_at=at(24, 0, 30), disposition="connected",
                                answered_by=doc, wait_s=40, **team_a),
        "c7": await insert_call(pool, offered_at=at(23, 14), disposition="connected",
                                answered_by=doc2, wait_s=5, rung=(doc2,), **team_2),
        "c8": await insert_call(pool, offered_at=at(23, 15), disposition="connected",
                                answered_by=odoc, wait_s=100, rung=(odoc,), **other),
        "c9": await insert_call(pool, offered_at=at(23, 16), disposition="abandoned",
                                rung=(odoc,), **other),
        "c10": await insert_call(pool, offered_at=at(23, 17), disposition="missed",
                                 district_id=d.district_id, rung=(d.agent_id,)),
        "c11": await insert_call(pool, offered_at=at(22, 23, 59), disposition="connected",
                                 answered_by=doc, wait_s=50, rung=(doc,), **team_a),
        "c12": await insert_call(pool, offered_at=at(30, 0), disposition="connected",
                                 answered_by=doc, wait_s=60, rung=(doc,), **team_a),
    }
    t = {
        "tk1": await insert_task(pool, opened_at=at(23, 11), owner=doc, calls=(c["c3"],),
                                 status="done", closed_at=at(23, 18)),
        "tk2": await insert_task(pool, opened_at=at(23, 12), owner=doc, calls=(c["c4"],),
                                 status="done", closed_at=at(23, 20)),
        "tk3": await insert_task(pool, opened_at=at(23, 17), owner=None, calls=(c["c10"],),
                                 status="done", closed_at=at(24, 2)),
        "tk4": await insert_task(pool, opened_at=at(23, 16), owner=odoc, calls=(c["c9"],)),
        "tk5": await insert_task(pool, opened_at=at(24, 9), owner=asst),
        "tk6": await insert_task(pool, opened_at=at(23, 13), owner=doc, status="cancelled",
                                 closed_at=at(23, 14)),
    }
    return Week(places, c, t)


def figures(rows: list[ReportRow]) -> dict[tuple[str, date], tuple]:
    """(group name, bucket) -> (offered, answered, rate, avg, p90, abandoned,
    opened, on time, late, open overdue)."""
    out = {}
    for r in rows:
        assert (r.group_name, r.bucket) not in out
        out[(r.group_name, r.bucket)] = (
            r.offered, r.answered, r.answered_rate, r.avg_answer_s, r.p90_answer_s, r.abandoned,
            r.callbacks_opened, r.callbacks_on_time, r.callbacks_late, r.callbacks_open_overdue)
    return out


TUE = date(2026, 11, 24)


async def test_team_by_day_for_the_district(pool: asyncpg.Pool, week: Week) -> None:
    rows = await report(pool, week.places.scope("district_admin"), level="team", period="day",
                        since=MON, until=SUN, now=NOW)
    # p90 of 10, 20, 30 s: rank 0.9 × 2 = 1.8 → 20 + 0.8 × 10 = 28
    assert figures(rows) == {
        # tk1, tk2 and tk6 (no call known: the owner's team); tk5 on Tuesday likewise
        ("测试一团队", MON): (5, 3, 0.6, 20.0, 28.0, 1, 3, 2, 0, 0),
        ("测试一团队", TUE): (1, 1, 1.0, 40.0, 40.0, 0, 1, 0, 0, 0),
        ("测试二团队", MON): (1, 1, 1.0, 5.0, 5.0, 0, 0, 0, 0, 0),
        ("另一团队", MON): (2, 1, 0.5, 100.0, 100.0, 1, 1, 0, 0, 1),
        # no team: the district line's call c10 and its task tk3, closed late
        ("", MON): (1, 0, 0.0, None, None, 0, 1, 0, 1, 0),
    }
    assert rows[-1].group_id is None and rows[-2].group_id is not None
    assert {r.level for r in rows} == {"team"}
    team_a = [r for r in rows if r.group_name == "测试一团队"]
    assert [r.group_id for r in team_a] == [week.places.d.team_id] * 2
    assert [r.bucket for r in team_a] == [MON, TUE]
    # the supervisor sees the same district
    again = await report(pool, week.places.scope("supervisor"), level="team", period="day",
                         since=MON, until=SUN, now=NOW)
    assert figures(again) == figures(rows)


async def test_center_by_week_and_district_by_month(pool: asyncpg.Pool, week: Week) -> None:
    admin = week.places.scope("district_admin")
    rows = await report(pool, admin, level="center", period="week", since=MON, until=SUN, now=NOW)
    # center 1: waits 5, 10, 20, 30, 40 → avg 21, p90 rank 3.6 → 30 + 0.6 × 10 = 36
    assert figures(rows) == {
        ("测试街", MON): (7, 5, 5 / 7, 21.0, 36.0, 1, 4, 2, 0, 0),
        ("另一街", MON): (2, 1, 0.5, 100.0, 100.0, 1, 1, 0, 0, 1),
        ("", MON): (1, 0, 0.0, None, None, 0, 1, 0, 1, 0),
    }
    rows = await report(pool, admin, level="district", period="month", since=MON, until=SUN,
                        now=NOW)
    # waits 5, 10, 20, 30, 40, 100 → avg 205 / 6; p90 rank 4.5 → 40 + 0.5 × 60 = 70
    assert figures(rows) == {
        ("测试区", date(2026, 11, 1)): (10, 6, 0.6, pytest.approx(205 / 6), 70.0, 2, 6, 2, 1, 1),
    }


async def test_weeks_start_on_monday_and_the_range_takes_whole_days_in_shanghai(
        pool: asyncpg.Pool, week: Week) -> None:
    admin = week.places.scope("district_admin")
    # from Sunday 22 to Monday 30: c11 (Sun 23:59) is in the week of Monday 16, c12 (Mon 30
    # 00:00) opens the week of Monday 30
    rows = await report(pool, admin, level="team", period="week", since=date(2026, 11, 22),
                        until=date(2026, 11, 30), now=NOW)
    team_a = {r.bucket: (r.offered, r.answered, r.avg_answer_s)
              for r in rows if r.group_name == "测试一团队"}
    assert team_a == {date(2026, 11, 16): (1, 1, 50.0), MON: (6, 4, 25.0),
                      date(2026, 11, 30): (1, 1, 60.0)}
    # one day alone: Tuesday holds c6 only (00:30 in Shanghai, Monday 16:30 UTC)
    rows = await report(pool, admin, level="district", period="day", since=TUE, until=TUE, now=NOW)
    assert [(r.bucket, r.offered, r.callbacks_opened) for r in rows] == [(TUE, 1, 1)]


async def test_doctor_level_counts_the_calls_each_was_rung_for(pool: asyncpg.Pool, week: Week) -> None:
    rows = await report(pool, week.places.scope("district_admin"), level="doctor", period="day",
                        since=MON, until=SUN, now=NOW)
    # 王医生 rung for c1–c5, took c1 and c5 (10, 20 s: p90 = 10 + 0.9 × 10 = 19), and c6 on
    # Tuesday without being rung
    assert figures(rows) == {
        ("王医生", MON): (5, 2, 0.4, 15.0, 19.0, 1, 3, 2, 0, 0),
        ("王医生", TUE): (1, 1, 1.0, 40.0, 40.0, 0, 0, 0, 0, 0),
        ("李助理", MON): (2, 1, 0.5, 30.0, 30.0, 0, 0, 0, 0, 0),
        ("李助理", TUE): (0, 0, None, None, None, 0, 1, 0, 0, 0),
        ("二团队医生", MON): (1, 1, 1.0, 5.0, 5.0, 0, 0, 0, 0, 0),
        ("外中心医生", MON): (2, 1, 0.5, 100.0, 100.0, 1, 1, 0, 0, 1),
        ("孙客服", MON): (1, 0, 0.0, None, None, 0, 0, 0, 0, 0),
    }


async def test_a_director_counts_only_her_center(pool: asyncpg.Pool, week: Week) -> None:
    director = week.places.scope("director")
    rows = await report(pool, director, level="team", period="day", since=MON, until=SUN, now=NOW)
    assert figures(rows) == {
        ("测试一团队", MON): (5, 3, 0.6, 20.0, 28.0, 1, 3, 2, 0, 0),
        ("测试一团队", TUE): (1, 1, 1.0, 40.0, 40.0, 0, 1, 0, 0, 0),
        ("测试二团队", MON): (1, 1, 1.0, 5.0, 5.0, 0, 0, 0, 0, 0),
        # nothing of the district line (c10, the desk's tk3) nor of the other center
    }
    # at the district level the other center's calls and tasks are not in her figures either
    rows = await report(pool, director, level="district", period="month", since=MON, until=SUN,
                        now=NOW)
    assert figures(rows) == {
        ("测试区", date(2026, 11, 1)): (7, 5, 5 / 7, 21.0, 36.0, 1, 4, 2, 0, 0)}
    rows = await report(pool, director, level="doctor", period="week", since=MON, until=SUN,
                        now=NOW)
    assert "外中心医生" not in {r.group_name for r in rows}
    assert "孙客服" not in {r.group_name for r in rows}


@pytest.mark.parametrize("role", ["family_doctor", "assistant"])
async def test_a_team_member_counts_her_team_and_the_calls_she_took(
        pool: asyncpg.Pool, week: Week, role: str) -> None:
    rows = await report(pool, week.places.scope(role), level="center", period="week",
                        since=MON, until=SUN, now=NOW)
    # team A's c1–c6 (c7 is team 2's; waits 10, 20, 30, 40: p90 rank 2.7 → 37); tasks: the
    # team's staff's tk1, tk2, tk5, tk6
    assert figures(rows) == {("测试街", MON): (6, 4, 4 / 6, 25.0, 37.0, 1, 4, 2, 0, 0)}


async def test_the_night_doctor_and_the_agent_count_only_their_own(
        pool: asyncpg.Pool, week: Week) -> None:
    # the night doctor's shifts (17:00–08:00, center 1) hold c5 (Mon 23:30) and c6 (Tue 00:30);
    # c10 at 17:00 is in no center, so not in her shift's area; she owns no task
    rows = await report(pool, week.places.scope("night_doctor"), level="district", period="week",
                        since=MON, until=SUN, now=NOW)
    assert figures(rows) == {("测试区", MON): (2, 2, 1.0, 30.0, 38.0, 0, 0, 0, 0, 0)}
    # the agent took no call, and the desk's only task (tk3) is closed: the desk sees open ones
    assert await report(pool, week.places.scope("agent"), level="district", period="week",
                        since=MON, until=SUN, now=NOW) == []


def test_buckets() -> None:
    assert bucket_of(date(2026, 11, 29), "week") == MON   # a Sunday belongs to the Monday before
    assert bucket_of(MON, "week") == MON
    assert bucket_of(date(2026, 11, 29), "month") == date(2026, 11, 1)
    assert bucket_starts("week", date(2026, 11, 25), date(2026, 12, 7)) == [
        MON, date(2026, 11, 30), date(2026, 12, 7)]
    assert bucket_starts("month", date(2026, 11, 15), date(2027, 1, 1)) == [
        date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)]
    assert bucket_starts("day", MON, MON) == [MON]


async def test_bad_arguments_are_refused(pool: asyncpg.Pool, week: Week) -> None:
    admin = week.places.scope("district_admin")
    for kwargs in ({"level": "nation", "period": "day"}, {"level": "team", "period": "hour"}):
        with pytest.raises(ValueError):
            await report(pool, admin, since=MON, until=SUN, **kwargs)
    with pytest.raises(ValueError):
        await report(pool, admin, level="team", period="day", since=SUN, until=MON)


async def test_series_for_a_chart_fill_the_empty_buckets(pool: asyncpg.Pool, week: Week) -> None:
    rows = await report(pool, week.places.scope("district_admin"), level="team", period="day",
                        since=MON, until=date(2026, 11, 25), now=NOW)
    buckets = bucket_starts("day", MON, date(2026, 11, 25))
    by_field = {f.field: f for f in FIGURES}
    team = week.places.d.team_id
    assert series(rows, by_field["offered"], buckets, group_id=team) == [
        ("2026-11-23", 5), ("2026-11-24", 1), ("2026-11-25", 0)]
    assert series(rows, by_field["answered_rate"], buckets, group_id=team) == [
        ("2026-11-23", 60.0), ("2026-11-24", 100.0), ("2026-11-25", None)]
    assert series(rows, by_field["avg_answer_s"], buckets, group_id=None) == [
        ("2026-11-23", None), ("2026-11-24", None), ("2026-11-25", None)]
    assert series(rows, by_field["callbacks_late"], buckets, group_id=None) == [
        ("2026-11-23", 1), ("2026-11-24", 0), ("2026-11-25", 0)]
    assert {f.field for f in FIGURES} == {
        f for f in ReportRow.__dataclass_fields__ if f not in ("level", "group_id", "group_name",
                                                               "bucket")}


def test_combined_adds_the_groups_up_per_bucket() -> None:
    a = ReportRow("team", 1, "一队", MON, offered=4, answered=2, answered_rate=0.5, avg_answer_s=10.0,
                  p90_answer_s=12.0, abandoned=1, callbacks_opened=2, callbacks_on_time=1)
    b = ReportRow("team", 2, "二队", MON, offered=6, answered=6, answered_rate=1.0, avg_answer_s=20.0,
                  p90_answer_s=30.0, callbacks_opened=1, callbacks_late=1)
    c = ReportRow("team", 2, "二队", SUN, offered=1, answered=1, answered_rate=1.0, avg_answer_s=7.0,
                  p90_answer_s=7.0)
    whole = combined([c, a, b])
    assert [(r.bucket, r.group_id, r.offered, r.answered, r.answered_rate, r.avg_answer_s,
             r.p90_answer_s, r.abandoned, r.callbacks_opened, r.callbacks_on_time, r.callbacks_late)
            for r in whole] == [
        (MON, None, 10, 8, 0.8, 17.5, None, 1, 3, 1, 1),   # 2×10 s + 6×20 s over 8 answered
        (SUN, None, 1, 1, 1.0, 7.0, 7.0, 0, 0, 0, 0)]       # one group: its percentile stands
    assert combined([]) == []
