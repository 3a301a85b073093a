"""recordings.figures: today's figures per center and district, computed by hand here, and
restricted by the viewer's scope."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from recordings.figures import day_figures
from routing.scope import Scope, Viewer
from store.pii import PiiVault
from tests.district import District, build_district

SH = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 11, 24)
MIDNIGHT = datetime(2026, 11, 24, 0, 0, tzinfo=SH)
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=SH)


async def call(pool: asyncpg.Pool, d: District, n: int, center_id: int, offered_at: datetime, *,
               answer_after_s: float | None = None, disposition: str = "connected") -> None:
    connected = offered_at + timedelta(seconds=answer_after_s) if answer_after_s is not None else None
    await pool.execute(
        "INSERT INTO call_records (call_id, offered_at, connected_at, ended_at, disposition, district_id, center_id)"
        " VALUES ($1, $2::timestamptz, $3::timestamptz, $2::timestamptz + interval '5 minutes', $4, $5, $6)",
        f"call-{n}", offered_at, connected, disposition if connected is None else "connected",
        d.district_id, center_id)


async def task(pool: asyncpg.Pool, key: str, due_in: timedelta, *, resident_id: int | None = None,
               owner: int | None = None, status: str = "open", district_id: int | None = None) -> None:
    """A callback task; one nobody owns is its district's desk's through its missed call."""
    task_id = await pool.fetchval(
        "WITH t AS (INSERT INTO tasks (kind, caller_key, resident_id, caller_number_hash, caller_number_enc,"
        " caller_number_masked, owner_staff_id, opened_at, due_at, status, closed_at, close_note)"
        " VALUES ('callback', $1, $2, '\\x00', '\\x00', '138****0001', $3, $4::timestamptz - interval '8 hours',"
        " $4, $5::text, CASE WHEN $5::text = 'open' THEN NULL ELSE $4 END,"
        " CASE WHEN $5::text = 'open' THEN NULL ELSE '' END) RETURNING id, opened_at, owner_staff_id),"
        " e AS (INSERT INTO task_events (task_id, version, at, event, owner_to) SELECT id, 1, opened_at, 'opened', owner_staff_id FROM t) SELECT id FROM t",
        key, resident_id, owner, NOW + due_in, status)
    if district_id is not None:
        call_id = await pool.fetchval(
            "INSERT INTO call_records (call_id, offered_at, disposition, district_id)"
            " VALUES ($1, $2, 'missed', $3) RETURNING id", f"task-{key}",
            NOW - timedelta(days=2),  # (another day: today's figures count only the calls above)
            district_id)
        await pool.execute("INSERT INTO callback_calls (task_id, call_record_id) VALUES ($1, $2)",
                           task_id, call_id)


async def test_figures_per_center_and_district_by_hand_and_within_scope(pool: asyncpg.Pool, vault: PiiVault) -> None:
    d = await build_district(pool, vault, week_of=date(2026, 11, 23))
    b = await pool.fetchval("INSERT INTO centers (district_id, name) VALUES ($1, '别的街') RETURNING id", d.district_id)
    b_doctor = await pool.fetchval(
        "INSERT INTO staff (staff_no, name, role, district_id, center_id) VALUES ('B001', '别医生',"
        " 'family_doctor', $1, $2) RETURNING id", d.district_id, b)
    a = d.center_id
    # center A: answered after 10, 20, 30, 40 s (the first at the day's very first instant), one abandoned
    for n, (hour, after) in enumerate([(0, 10), (9, 20), (10, 30), (11, 40)]):
        await call(pool, d, n, a, MIDNIGHT + timedelta(hours=hour), answer_after_s=after)
    await call(pool, d, 4, a, MIDNIGHT + timedelta(hours=12), disposition="abandoned")
    # center B: one answered after 100 s, one missed
    await call(pool, d, 5, b, MIDNIGHT + timedelta(hours=9), answer_after_s=100)
    await call(pool, d, 6, b, MIDNIGHT + timedelta(hours=10), disposition="missed")
    # not today: the instant before, and the next day's first
    await call(pool, d, 7, a, MIDNIGHT - timedelta(seconds=1), answer_after_s=1)
    await call(pool, d, 8, a, MIDNIGHT + timedelta(days=1), disposition="abandoned")
    # callbacks: due within the hour (A's resident), overdue (owned in A), the desk's, B's, one closed
    await task(pool, "resident:a", timedelta(minutes=30), resident_id=d.resident_id)
    await task(pool, "number:a", timedelta(minutes=-10), owner=d.doctor_id)
    await task(pool, "number:desk", timedelta(hours=5), district_id=d.district_id)
    await task(pool, "number:b", timedelta(hours=2), owner=b_doctor)
    await task(pool, "number:done", timedelta(minutes=-30), owner=d.doctor_id, status="done")

    admin = Scope(Viewer(1, "X1", "x", "district_admin", d.district_id))
    figures = await day_figures(pool, admin, DAY, now=NOW)
    district = figures.district
    assert (district.offered, district.answered, district.abandoned) == (7, 5, 1)
    assert (district.answered_pct, district.abandoned_pct) == (71.4, 14.3)  # 5/7, 1/7
    assert district.avg_answer_s == 40.0  # (10+20+30+40+100)/5
    assert district.p90_answer_s == 76.0  # rank 0.9·4 = 3.6: 40 + 0.6·(100−40)
    assert (district.callbacks_open, district.callbacks_due_1h, district.callbacks_overdue) == (4, 1, 1)
    by_center = {c.center_id: c for c in figures.centers}
    ca, cb = by_center[a], by_center[b]
    assert (ca.center, ca.offered, ca.answered_pct, ca.abandoned_pct) == ("测试街", 5, 80.0, 20.0)
    assert (ca.avg_answer_s, ca.p90_answer_s) == (25.0, 37.0)  # rank 2.7: 30 + 0.7·10
    assert (ca.callbacks_open, ca.callbacks_due_1h, ca.callbacks_overdue) == (2, 1, 1)
    assert (cb.offered, cb.answered_pct, cb.abandoned_pct, cb.avg_answer_s, cb.p90_answer_s) == (2, 50.0, 0.0,
                                                                                                100.0, 100.0)
    assert (cb.callbacks_open, cb.callbacks_due_1h, cb.callbacks_overdue) == (1, 0, 0)
    assert by_center[None].callbacks_open == 1  # the desk's task: no center

    # A's director: her center only, and her "district" is what she may see
    director = Scope(Viewer(2, "X2", "x", "director", d.district_id, a))
    mine = await day_figures(pool, director, DAY, now=NOW)
    assert [c.center_id for c in mine.centers] == [a]
    assert (mine.district.offered, mine.district.answered_pct, mine.district.p90_answer_s) == (5, 80.0, 37.0)
    assert (mine.district.callbacks_open, mine.district.callbacks_due_1h,
            mine.district.callbacks_overdue) == (2, 1, 1)

    # a day without calls: nothing to divide by
    empty = await day_figures(pool, director, DAY + timedelta(days=3), now=NOW)
    assert (empty.district.offered, empty.district.answered_pct, empty.district.avg_answer_s) == (0, None, None)
