"""The routing cache on real PostgreSQL: loaded once, reloaded when the data change (NOTIFY from
the tables' triggers), when a call falls outside the loaded roster window, and not otherwise."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from routing.calendar_store import calendar_loader
from routing.snapshot import RoutingCache
from store.pii import PiiVault
from tests.district import build_district

SH = ZoneInfo("Asia/Shanghai")
MONDAY_10 = datetime(2026, 11, 23, 10, tzinfo=SH)


async def until(predicate, seconds: float = 3.0) -> bool:
    for _ in range(int(seconds / 0.02)):  # bounded
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def test_cache_reloads_on_change_and_only_then(pool: asyncpg.Pool, vault: PiiVault,
                                                     database_url: str) -> None:
    district = await build_district(pool, vault, week_of=date(2026, 11, 22))
    cache = RoutingCache(pool, database_url, calendar_loader(SH), {}, SH)
    await cache.start()
    try:
        first = await cache.data(MONDAY_10)
        assert cache.reloads == 1 and first.on_leave(district.doctor_id, MONDAY_10.date()) is None
        await cache.data(MONDAY_10 + timedelta(hours=5))
        assert cache.reloads == 1  # same window, nothing changed: no query

        # a leave entered (on any node: it is the database that tells)
        await pool.execute("INSERT INTO staff_leaves (staff_id, starts_on, ends_on, reason)"
                           " VALUES ($1, '2026-11-23', '2026-11-24', '病假')", district.doctor_id)
        assert await until(lambda: cache._dirty), "no NOTIFY arrived"
        fresh = await cache.data(MONDAY_10)
        assert cache.reloads == 2
        assert fresh.on_leave(district.doctor_id, MONDAY_10.date()).reason == "病假"

        # a swap in the roster, and a calendar closure, are seen the same way
        await pool.execute("UPDATE duty_shifts SET ring_position = 2")
        assert await until(lambda: cache._dirty)
        assert {s.ring_position for s in (await cache.data(MONDAY_10)).shifts} == {2}
        await pool.execute("INSERT INTO calendar_closures (on_date, center_id, reason)"
                           " VALUES ('2026-11-23', $1, '停电')", district.center_id)
        assert await until(lambda: cache._dirty)
        closed = (await cache.data(MONDAY_10)).calendar.day_service(MONDAY_10, district.center_id)
        assert not closed.day and "停电" in closed.reason
        reloads = cache.reloads

        # a call far outside the loaded window (next month) loads that window
        later = await cache.data(MONDAY_10 + timedelta(days=30))
        assert cache.reloads == reloads + 1 and later.shifts == ()
    finally:
        await cache.stop()


async def test_with_postgresql_away_the_data_last_loaded_keeps_routing(
        vault: PiiVault, database_url: str, pool: asyncpg.Pool) -> None:
    await build_district(pool, vault, week_of=date(2026, 11, 22))
    own = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    cache = RoutingCache(own, database_url, calendar_loader(SH), {}, SH)
    loaded = await cache.data(MONDAY_10)
    await own.close()  # every later query finds the database away ("pool is closed")
    cache._dirty = True  # a change was notified just before: a reload is due
    assert await cache.data(MONDAY_10) is loaded
    assert await cache.data(MONDAY_10 + timedelta(minutes=1)) is loaded  # no retry at every call
    assert cache.reloads == 1
