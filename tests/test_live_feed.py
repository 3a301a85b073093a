"""recordings.live_feed: the board's snapshot (within scope), and events fanned out to many viewers
over one Redis subscription, a slow viewer told to resync without holding up the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import asyncpg
import redis.asyncio as aioredis

from recordings.live import EVENTS_CHANNEL, LiveCalls
from recordings.live_feed import RESYNC, LiveFeed
from routing.presence import Kind, Presence
from routing.scope import Scope, Viewer
from store.pii import PiiVault
from tests.district import District, build_district

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


async def a_record(pool: asyncpg.Pool, d: District, call_id: str, *, center_id: int | None,
                   team_id: int | None) -> int:
    return await pool.fetchval(
        "INSERT INTO call_records (call_id, caller_number_masked, offered_at, district_id, center_id, team_id)"
        " VALUES ($1, '138****0001', $2, $3, $4, $5) RETURNING id",
        call_id, NOW - timedelta(seconds=30), d.district_id, center_id, team_id)


def viewer(d: District, staff_id: int, role: str, *, center: bool = True, team: bool = False) -> Scope:
    return Scope(Viewer(staff_id, f"S{staff_id}", "x", role, d.district_id,
                        d.center_id if center else None, d.team_id if team else None))


async def test_snapshot_has_calls_waiting_callers_and_presence_within_scope(
        pool: asyncpg.Pool, redis: aioredis.Redis, vault: PiiVault) -> None:
    d = await build_district(pool, vault, week_of=date(2026, 11, 23))
    other_center = await pool.fetchval(
        "INSERT INTO centers (district_id, name) VALUES ($1, '别的街') RETURNING id", d.district_id)
    ours = await a_record(pool, d, "ours", center_id=d.center_id, team_id=d.team_id)
    queued = await a_record(pool, d, "queued", center_id=d.center_id, team_id=d.team_id)
    theirs = await a_record(pool, d, "theirs", center_id=other_center, team_id=None)
    clock = [NOW - timedelta(seconds=20)]
    live = LiveCalls(redis, node="n1", now=lambda: clock[0])
    live.offered("ours", record_id=ours, line="12320", caller_masked="138****0001")
    live.routed("ours", route_reason="day", district_id=d.district_id, center_id=d.center_id)
    live.answered("ours", d.doctor_id)
    live.offered("queued", record_id=queued, line=None, caller_masked="139****0002")
    clock[0] = NOW - timedelta(seconds=5)
    live.queued("queued", "day:1,2")
    live.offered("theirs", record_id=theirs, line=None, caller_masked="137****0003")
    assert await live.flush()
    presence = Presence(redis)
    await presence.set_state(d.assistant_id, Kind.DND)
    feed = LiveFeed(redis, pool, presence=presence, now=lambda: NOW)
    try:
        everything = await feed.snapshot(scope=viewer(d, 99, "district_admin", center=False))
        director = await feed.snapshot(scope=viewer(d, 98, "director"))
    finally:
        await live.aclose()
        await feed.aclose()
    assert {c.call_id for c in everything.calls} == {"ours", "queued", "theirs"}
    assert {c.call_id for c in director.calls} == {"ours", "queued"}  # not the other center's
    talking = next(c for c in director.calls if c.call_id == "ours")
    assert (talking.state, talking.staff_name, talking.caller, talking.line) == ("talking", "王医生", "138****0001",
                                                                                 "12320")
    assert talking.seconds_in_state == 20.0 and talking.seconds_total == 20.0
    assert [(w.call_id, w.position, w.seconds_waiting) for w in director.waiting] == [("queued", 0, 5.0)]
    assert director.seq == 6  # the six events written (a fresh Redis)
    # presence: the center's answering staff by team, the assistant on do-not-disturb
    (center,) = [c for c in director.presence if c.center_id == d.center_id]
    states = {s.name: s.state for t in center.teams for s in t.staff}
    assert states["李助理"] == "dnd" and states["王医生"] == "available"
    assert "孙客服" not in states  # the district's desk agent is not the director's staff
    assert any(s.name == "孙客服" for c in everything.presence for t in c.teams for s in t.staff)


async def test_a_hundred_viewers_cost_one_subscription_and_a_slow_one_is_told_to_resync(
        pool: asyncpg.Pool, redis: aioredis.Redis, redis_url: str) -> None:
    # pub/sub is server-wide: a console another test left running (session fixtures) may hold
    # its own subscription on this Redis server; this feed must add exactly one
    before = dict(await redis.pubsub_numsub(EVENTS_CHANNEL))[EVENTS_CHANNEL.encode()]
    feed = LiveFeed(redis, pool, url=redis_url, queue_size=8)
    live = LiveCalls(redis, node="n1")
    subs = [feed.subscribe() for _ in range(100)]
    for s in subs:
        await s.__aenter__()
    try:
        await feed.wait_listening()
        numsub = dict(await redis.pubsub_numsub(EVENTS_CHANNEL))
        assert numsub[EVENTS_CHANNEL.encode()] == before + 1
        assert feed.subscriptions_opened == 1
        slow, fast = subs[0], subs[1:]
        got: dict[int, list[str]] = {i: [] for i in range(len(fast))}

        async def read(i: int) -> None:
            while len(got[i]) < 20:
                event = await fast[i].next(5.0)
                got[i].append(event["call_id"])

        readers = [asyncio.create_task(read(i)) for i in range(len(fast))]
        for n in range(20):  # the slow viewer reads nothing meanwhile
            live.offered(f"c{n}", record_id=None, line=None, caller_masked="")
            await live.flush()
            await asyncio.sleep(0)  # let the readers keep up, as real viewers do
        await asyncio.wait_for(asyncio.gather(*readers), 10)
        assert all(got[i] == [f"c{n}" for n in range(20)] for i in got)
        assert slow.stale and slow.resyncs == 1
        assert await slow.next(1.0) is RESYNC
        assert not slow.stale
        live.offered("after", record_id=None, line=None, caller_masked="")
        await live.flush()
        assert (await slow.next(5.0))["call_id"] == "after"  # back on the feed after its snapshot
    finally:
        for s in subs:
            await s.__aexit__(None, None, None)
        await live.aclose()
        await feed.aclose()


async def test_a_lost_subscription_comes_back_and_tells_every_viewer_to_resync(
        pool: asyncpg.Pool, redis: aioredis.Redis, redis_url: str) -> None:
    feed = LiveFeed(redis, pool, url=redis_url)
    async with feed.subscribe() as events:
        await feed.wait_listening()
        await redis.client_kill_filter(_type="pubsub")
        assert await events.next(10.0) is RESYNC
        await feed.wait_listening(10.0)
        live = LiveCalls(redis, node="n1")
        live.offered("later", record_id=None, line=None, caller_masked="")
        await live.flush()
        assert (await events.next(5.0))["call_id"] == "later"
        await live.aclose()
    assert feed.subscriptions_opened == 2
    await feed.aclose()


async def test_viewers_with_one_scope_share_one_visibility_query_per_event(
        pool: asyncpg.Pool, redis: aioredis.Redis, vault: PiiVault) -> None:
    """100 supervisors watching one district ask the database once for a call's first event
    (not 100 times); a yes is remembered; a no is asked again at the next event (routing can
    bring the call into scope), and another center's call stays out of a director's view."""
    d = await build_district(pool, vault, week_of=date(2026, 11, 23))
    other_center = await pool.fetchval(
        "INSERT INTO centers (district_id, name) VALUES ($1, '别的街') RETURNING id", d.district_id)
    ours = await a_record(pool, d, "ours", center_id=d.center_id, team_id=d.team_id)
    theirs = await a_record(pool, d, "theirs", center_id=other_center, team_id=None)
    feed = LiveFeed(redis, pool)
    asked: list[list[int | None]] = []
    real_visible = feed.visible

    async def counted(scope: Scope, record_ids: list[int | None]) -> set[int]:
        asked.append(record_ids)
        return await real_visible(scope, record_ids)

    feed.visible = counted  # type: ignore[method-assign]
    supervisors = [viewer(d, 1000 + i, "supervisor", center=False) for i in range(100)]
    answers = await asyncio.gather(*(feed.sees(s, ours, 1) for s in supervisors))
    assert all(answers) and len(asked) == 1
    assert all(await asyncio.gather(*(feed.sees(s, ours, 2) for s in supervisors)))
    assert len(asked) == 1  # remembered
    director = viewer(d, 7, "director")
    assert not await feed.sees(director, theirs, 3)
    assert not await feed.sees(director, theirs, 3)  # the same event: one question
    assert len(asked) == 2
    assert not await feed.sees(director, theirs, 4)  # a later event asks again
    assert len(asked) == 3
    await pool.execute("UPDATE call_records SET center_id = $2 WHERE id = $1", theirs, d.center_id)
    assert await feed.sees(director, theirs, 5)  # placed in her center since


async def test_a_presence_change_reaches_the_subscribers_as_who_changed(
        pool: asyncpg.Pool, redis: aioredis.Redis, vault: PiiVault) -> None:
    d = await build_district(pool, vault, week_of=date(2026, 11, 22))
    # a channel of this test's own: pub/sub is server-wide, other tests' changes stay out
    presence = Presence(redis, now=lambda: NOW, changes_channel=f"test:presence:{id(pool)}")
    feed = LiveFeed(redis, pool, presence=presence, now=lambda: NOW)
    try:
        async with feed.subscribe() as events:
            await feed.wait_listening()
            assert await presence.set_state(d.doctor_id, Kind.DND)
            assert await events.next(5) == {"type": "presence", "staff_id": d.doctor_id}
            assert await feed.presence_of(d.doctor_id) == "dnd"
            # not a change: nothing told
            assert not await presence.registered(d.doctor_id)
            assert await presence.set_state(d.doctor_id, Kind.AVAILABLE)
            assert await events.next(5) == {"type": "presence", "staff_id": d.doctor_id}
            await redis.publish(presence.changes_channel, "not a staff id")
            assert await presence.set_state(d.assistant_id, Kind.OFFLINE)
            assert await events.next(5) == {"type": "presence", "staff_id": d.assistant_id}
    finally:
        await feed.aclose()
