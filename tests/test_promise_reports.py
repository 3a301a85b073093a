"""履约 (handover/promise_reports.py and its console page): on-time rates counted by hand.

Tasks made through handover.tasks.Tasks, the week of Monday 2026-11-23 (Asia/Shanghai),
now = Fri 27 12:00:

  task      kind               owner          opened      due          outcome
  on_time   callback           doctor         Mon 09:00   Mon 17:00    done Mon 11:00 (a call at 10:00)
  late      referral_followup  doctor         Mon 08:00   Thu 08:00    done Thu 10:00, late reason
  unreach   callback           doctor         Tue 09:00   Tue 17:00    3 attempts, unreachable Tue 11:00
  overdue   handover           doctor         Wed 07:00   Wed 09:00    open
  not_yet   handover           doctor         Fri 07:00   Sat 09:00    open, not yet due
  edge      handover           doctor         Sun 22 20:00 Mon 04:00   done Sun 23:30 (due Monday: this week)
  other     handover           other center   Tue 07:00   Tue 09:00    done Tue 08:30
"""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import date, datetime, timedelta

import asyncpg
import pytest

from handover.promise_reports import PromiseRow, combined, promise_report
from handover.tasks import Tasks
from routing.scope import Scope
from store.pii import PiiVault
from tests.console import SH, Harness, assert_conforms
from tests.console_rows import Places, build_places, insert_call

MON = date(2026, 11, 23)
SUN = date(2026, 11, 29)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=SH)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=SH)


def number(key: str) -> dict:
    return {"number_hash": hashlib.sha256(key.encode()).digest(), "number_encrypted": b"\x00",
            "number_masked": "138****0009"}


async def open_task(tasks: Tasks, kind: str, owner: int, opened: datetime, due: datetime, **subject) -> int:
    task = await tasks.open(kind=kind, owner_staff_id=owner, opened_at=opened, due_at=due, **subject)
    return task.id


async def close(tasks: Tasks, task_id: int, actor: int, when: datetime, **kwargs) -> None:
    task = await tasks.get(task_id)
    await tasks.close(task_id, version=task.version, actor_staff_id=actor, at=when, **kwargs)


@pytest.fixture
async def week(pool: asyncpg.Pool, vault: PiiVault) -> tuple[Places, dict[str, int]]:
    places = await build_places(pool, vault, week_of=date(2026, 11, 22))
    d = places.d
    tasks = Tasks(pool)
    mine = {"resident_id": d.resident_id}
    ids = {
        "on_time": await open_task(tasks, "callback", d.doctor_id, at(23, 9), at(23, 17), **mine, **number("a")),
        "late": await open_task(tasks, "referral_followup", d.doctor_id, at(23, 8), at(26, 8), **mine),
        "unreach": await open_task(tasks, "callback", d.doctor_id, at(24, 9), at(24, 17), **number("b")),
        "overdue": await open_task(tasks, "handover", d.doctor_id, at(25, 7), at(25, 9), **mine),
        "not_yet": await open_task(tasks, "handover", d.doctor_id, at(27, 7), at(28, 9), **mine),
        "edge": await open_task(tasks, "handover", d.doctor_id, at(22, 20), at(23, 4), **mine),
        "other": await open_task(tasks, "handover", places.other_doctor_id, at(24, 7), at(24, 9), **number("c")),
    }
    # the evidence of both "done" with a call: the resident answered by her doctor on Monday
    await insert_call(pool, offered_at=at(23, 10), disposition="connected", district_id=d.district_id,
                      center_id=d.center_id, team_id=d.team_id, answered_by=d.doctor_id, wait_s=5,
                      resident_id=d.resident_id)
    await close(tasks, ids["on_time"], d.doctor_id, at(23, 11), status="done", note="已回电")
    await close(tasks, ids["late"], d.doctor_id, at(26, 10), status="done", note="已就诊", outcome="seen",
                late_reason="居民外出两天")
    for minute in (10, 50, 90):
        await tasks.record_attempt(ids["unreach"], outcome="no_answer", actor_staff_id=d.doctor_id,
                                   at=at(24, 9) + timedelta(minutes=minute))
    await close(tasks, ids["unreach"], d.doctor_id, at(24, 11), status="unreachable", note="三次未接通")
    await close(tasks, ids["edge"], d.doctor_id, at(22, 23, 30), status="done", note="已签收")
    await close(tasks, ids["other"], places.other_doctor_id, at(24, 8, 30), status="done", note="已签收")
    return places, ids


def counts(rows: list[PromiseRow]) -> dict[tuple[str, str], tuple[int, int, int, int, int, float | None]]:
    return {(r.group_name, r.kind): (r.due, r.on_time, r.late, r.unreachable, r.open_overdue, r.on_time_rate)
            for r in rows}


async def test_per_doctor_by_week_counts_each_kind(pool: asyncpg.Pool, week) -> None:
    places, _ = week
    got = await promise_report(pool, places.scope("district_admin"), level="doctor", period="week",
                               since=MON, until=SUN, now=NOW)
    assert {r.bucket for r in got.rows} == {MON}
    assert counts(got.rows) == {
        ("王医生", "callback"): (2, 1, 0, 1, 0, 0.5),          # unreachable is never on time
        ("王医生", "referral_followup"): (1, 0, 1, 0, 0, 0.0),
        ("王医生", "handover"): (3, 1, 0, 0, 1, 0.5),          # not_yet is due, not in the rate
        ("外中心医生", "handover"): (1, 1, 0, 0, 0, 1.0),
    }
    whole = combined(got.rows)
    assert [(r.due, r.on_time, r.settled) for r in whole] == [(7, 3, 6)]


async def test_buckets_are_by_the_deadline_in_shanghai(pool: asyncpg.Pool, week) -> None:
    places, _ = week
    scope = places.scope("district_admin")
    by_day = await promise_report(pool, scope, level="district", period="day", since=MON, until=SUN, now=NOW)
    days = {(r.bucket, r.kind): r.due for r in by_day.rows}
    # edge opened on Sunday 22 but was due Monday 04:00 (Sunday 20:00 UTC): Monday's
    assert days[(MON, "handover")] == 1 and days[(MON, "callback")] == 1
    sunday = await promise_report(pool, scope, level="district", period="day", since=date(2026, 11, 22),
                                  until=date(2026, 11, 22), now=NOW)
    assert sunday.rows == [] and sunday.broken == []


async def test_center_and_team_levels_and_the_kind_filter(pool: asyncpg.Pool, week) -> None:
    places, _ = week
    scope = places.scope("supervisor")
    centers = await promise_report(pool, scope, level="center", period="month", since=MON, until=SUN, now=NOW)
    assert counts(centers.rows)[("另一街", "handover")] == (1, 1, 0, 0, 0, 1.0)
    assert counts(centers.rows)[("测试街", "callback")] == (2, 1, 0, 1, 0, 0.5)
    teams = await promise_report(pool, scope, level="team", period="month", since=MON, until=SUN, now=NOW,
                                 kinds=("referral_followup",))
    assert counts(teams.rows) == {("测试一团队", "referral_followup"): (1, 0, 1, 0, 0, 0.0)}


async def test_a_director_sees_her_center_only_and_every_broken_promise_is_listed(pool: asyncpg.Pool, week) -> None:
    places, ids = week
    got = await promise_report(pool, places.scope("director"), level="center", period="week",
                               since=MON, until=SUN, now=NOW)
    assert {r.group_name for r in got.rows} == {"测试街"}
    assert [(b.task_id, b.status) for b in got.broken] == [
        (ids["unreach"], "unreachable"), (ids["overdue"], "open"), (ids["late"], "done")]
    late = got.broken[-1]
    assert (late.late_reason, late.close_note, late.owner_no, late.resident_masked) == (
        "居民外出两天", "已就诊", "D001", "张*兰")
    assert got.broken[0].resident_masked == "138****0009" and got.broken[0].close_note == "三次未接通"
    # her doctor sees only what is hers or her team's: the other center's task is not there either
    doctor = await promise_report(pool, places.scope("family_doctor"), level="doctor", period="week",
                                  since=MON, until=SUN, now=NOW)
    assert {r.group_name for r in doctor.rows} == {"王医生"}


async def test_bad_arguments_are_refused(pool: asyncpg.Pool, week) -> None:
    places, _ = week
    scope: Scope = places.scope("district_admin")
    for kwargs in ({"level": "room"}, {"period": "year"}, {"kinds": ("complaint",)}, {"kinds": ()},
                   {"since": SUN, "until": MON}, {"since": date(2020, 1, 1)}):
        args = {"level": "center", "period": "day", "since": MON, "until": SUN, **kwargs}
        with pytest.raises(ValueError):
            await promise_report(pool, scope, now=NOW, **args)


# -- the console ---------------------------------------------------------------------------------

FEB = "since=2024-02-05&until=2024-02-11"  # a week no other test of the shared console writes in


async def test_the_console_page_api_and_csv_export(console: Harness) -> None:
    d = console.district
    tasks = Tasks(console.pool)
    opened = datetime(2024, 2, 6, 7, 0, tzinfo=SH)
    late = await open_task(tasks, "handover", d.doctor_id, opened, opened + timedelta(hours=2),
                           resident_id=d.resident_id)
    await close(tasks, late, d.doctor_id, opened + timedelta(hours=5), status="done", note="+1 已签收",
                late_reason='=HYPERLINK("http://x")')
    gone = await open_task(tasks, "callback", d.doctor_id, opened, opened + timedelta(hours=8),
                           **number(f"web-{late}"))
    for minute in (0, 40, 80):
        await tasks.record_attempt(gone, outcome="busy", actor_staff_id=d.doctor_id,
                                   at=opened + timedelta(minutes=minute))
    await close(tasks, gone, d.doctor_id, opened + timedelta(hours=2), status="unreachable", note="忙音")

    director = await console.signed_in("director")
    page = await director.get(f"/promises?{FEB}&level=doctor&period=week")
    assert page.status == 200 and 'id="promise-rows"' in page.text and "<svg" in page.text
    assert f"#{late}" in page.text and f"#{gone}" in page.text and "HYPERLINK" in page.text
    assert 'href="/promises"' in page.text
    report = await director.get_json(f"/api/v1/promises/report?{FEB}&level=doctor&period=week")
    assert_conforms(await console.openapi(), "GET", "/api/v1/promises/report", 200, report)
    mine = [r for r in report["rows"] if r["group_name"] == "王医生"]
    assert {(r["kind"], r["due"], r["late"], r["unreachable"], r["on_time_rate"]) for r in mine} == {
        ("handover", 1, 1, 0, 0.0), ("callback", 1, 0, 1, 0.0)}
    only = await director.get_json(f"/api/v1/promises/report?{FEB}&kind=callback")
    assert {b["task_id"] for b in only["broken"]} == {gone}

    exported = await director.get(f"/api/v1/promises/report/export.csv?{FEB}&level=doctor&reason=月度考核")
    assert exported.status == 200 and exported.text.startswith("\ufeff")
    cells = list(csv.reader(io.StringIO(exported.text.removeprefix("\ufeff"))))
    assert cells[0][:4] == ["level", "group_id", "group_name", "kind"]
    broken = {row[0]: row for row in cells if row and row[0] in (str(late), str(gone))}
    assert broken[str(late)][9] == "'=HYPERLINK(\"http://x\")" and broken[str(late)][10] == "'+1 已签收"
    assert broken[str(gone)][2] == "unreachable"
    audited = await console.pool.fetchrow(
        "SELECT actor, reason FROM audit_log WHERE action = 'promises.exported' ORDER BY id DESC LIMIT 1")
    assert audited["actor"] == f"staff:{console.logins['director'].staff_no}" and "月度考核" in audited["reason"]


async def test_the_console_refuses_who_may_not_and_what_is_wrong(console: Harness) -> None:
    doctor = await console.signed_in("family_doctor")
    for path in ("/promises", "/api/v1/promises/report",
                 "/api/v1/promises/report/export.csv?reason=看看"):
        assert (await doctor.get(path)).status == 403, path
    director = await console.signed_in("director")
    for query, code in (("kind=complaint", "bad_choice"), ("level=room", "bad_choice"),
                        ("since=2024-02-10&until=2024-02-01", "bad_range"), ("since=明天", "bad_date")):
        got = await director.get(f"/api/v1/promises/report?{query}")
        assert (got.status, got.json()["error"]) == (422, code), query
    missing = await director.get(f"/api/v1/promises/report/export.csv?{FEB}")
    assert (missing.status, missing.json()["error"]) == (422, "reason_required")
