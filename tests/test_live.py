"""recordings.live: each step of a call publishes one event and keeps the call's entry in Redis;
a dead node's entries expire; Redis away never costs the call."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import redis.asyncio as aioredis

from recordings.live import (
    EVENT_SEQ_KEY,
    EVENTS_CHANNEL,
    LIVE_BEATS_KEY,
    LIVE_CALLS_KEY,
    LiveCalls,
)
from routing.presence import presence_client

AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


async def next_events(pubsub, n: int, timeout_s: float = 5.0) -> list[dict]:
    events: list[dict] = []
    async with asyncio.timeout(timeout_s):
        while len(events) < n:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "message":
                events.append(json.loads(message["data"]))
    return events


async def entry(redis: aioredis.Redis, call_id: str) -> dict | None:
    raw = await redis.hget(LIVE_CALLS_KEY, call_id)
    return None if raw is None else json.loads(raw)


async def test_each_step_publishes_in_order_and_keeps_the_entry_until_the_end(redis: aioredis.Redis) -> None:
    live = LiveCalls(redis, node="n1", now=lambda: AT)
    pubsub = redis.pubsub()
    await pubsub.subscribe(EVENTS_CHANNEL)
    try:
        live.offered("c1", record_id=7, line="12320", caller_masked="138****0001")
        live.routed("c1", route_reason="day", resident_id=3, district_id=1, center_id=2, team_id=4)
        live.ringing("c1", [11, 12], {11: "own doctor", 12: "assistant"})
        live.ring_stopped("c1")
        live.queued("c1", "day:11,12")
        live.ringing("c1", [11])
        assert await live.flush()
        mid = await entry(redis, "c1")
        assert mid is not None and mid["state"] == "ringing" and mid["ringing"] == [11]
        live.ring_stopped("c1")  # back on hold in the queue it was rung from
        assert await live.flush()
        assert (await entry(redis, "c1"))["state"] == "queued"
        live.left_queue("c1")
        live.ringing("c1", [12])
        live.answered("c1", 12)
        assert await live.flush()
        talking = await entry(redis, "c1")
        assert talking is not None and talking["state"] == "talking" and talking["staff_id"] == 12
        assert talking["caller"] == "138****0001" and talking["center_id"] == 2 and talking["line"] == "12320"
        live.ended("c1", "connected")
        assert await live.flush()
        events = await next_events(pubsub, 11)
    finally:
        await pubsub.aclose()
        await live.aclose()
    assert [e["type"] for e in events] == [
        "offered", "routed", "ringing", "ring_stopped", "queued", "ringing", "ring_stopped", "left_queue",
        "ringing", "answered", "ended"]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + 11))  # one counter, no gaps
    assert all(isinstance(e["ts"], int) and e["ts"] > 1_600_000_000_000 for e in events)
    assert events[2]["call"]["ring_reasons"] == {"11": "own doctor", "12": "assistant"}
    assert events[-1]["call"]["disposition"] == "connected"
    assert await redis.hlen(LIVE_CALLS_KEY) == 0 and await redis.zcard(LIVE_BEATS_KEY) == 0


async def test_nothing_in_redis_holds_a_clear_number(redis: aioredis.Redis) -> None:
    live = LiveCalls(redis, node="n1")
    live.offered("c2", record_id=1, line=None, caller_masked="138****0001")
    live.answered("c2", 5)
    assert await live.flush()
    await live.aclose()
    for key in await redis.keys("*"):
        kind = await redis.type(key)
        dump = await redis.hgetall(key) if kind == b"hash" else {}
        assert b"13800000001" not in b"".join([key, *dump.keys(), *dump.values()])


async def test_a_dead_nodes_calls_expire_and_boards_are_told(redis: aioredis.Redis) -> None:
    dead = LiveCalls(redis, node="dead", ttl_s=0.3)
    alive = LiveCalls(redis, node="alive", ttl_s=0.3)
    dead.offered("ghost", record_id=1, line=None, caller_masked="138****0001")
    alive.offered("real", record_id=2, line=None, caller_masked="139****0002")
    assert await dead.flush() and await alive.flush()
    await dead.aclose()  # the node dies: nobody refreshes "ghost" any more
    pubsub = redis.pubsub()
    await pubsub.subscribe(EVENTS_CHANNEL)
    try:
        for _ in range(100):  # the live node refreshes its own calls and sweeps the others
            await alive.refresh()
            if await redis.hget(LIVE_CALLS_KEY, "ghost") is None:
                break
            await asyncio.sleep(0.05)
        assert await redis.hget(LIVE_CALLS_KEY, "ghost") is None
        assert await redis.hget(LIVE_CALLS_KEY, "real") is not None  # refreshed: kept
        expired = await next_events(pubsub, 1)
    finally:
        await pubsub.aclose()
        await alive.aclose()
    assert expired[0]["type"] == "expired" and expired[0]["call_id"] == "ghost"


async def test_redis_away_never_fails_the_call_and_a_resync_follows_its_return(
        redis: aioredis.Redis, redis_url: str) -> None:
    down = presence_client("redis://127.0.0.1:1/0", timeout_s=0.05)  # nothing listens there
    live = LiveCalls(down, node="n1", backoff_s=0.0)
    live.offered("c3", record_id=1, line=None, caller_masked="138****0001")  # does not raise
    live.answered("c3", 9)
    assert await live.flush()
    assert live.degraded and live.dropped == 2
    # Redis is back (here: the client pointed at the real one): the next write resyncs.
    live.client = presence_client(redis_url, timeout_s=1.0)
    live._scripts = {k: live.client.register_script(s.script) for k, s in live._scripts.items()}
    pubsub = redis.pubsub()
    await pubsub.subscribe(EVENTS_CHANNEL)
    try:
        live.ended("c4-unknown", "failed")  # an unknown call: nothing to publish
        live.ringing("c3", [9])
        assert await live.flush()
        events = await next_events(pubsub, 2)
    finally:
        await pubsub.aclose()
        await live.aclose()
        await down.aclose()
        await live.client.aclose()
    assert [e["type"] for e in events] == ["resync", "ringing"]
    assert not live.degraded
    assert (await entry(redis, "c3"))["state"] == "ringing"
    assert int(await redis.get(EVENT_SEQ_KEY)) == events[-1]["seq"]


async def test_without_redis_nothing_is_published_and_nothing_breaks() -> None:
    live = LiveCalls(None)
    live.offered("c5", record_id=None, line=None, caller_masked="")
    live.ended("c5", "ivr_only")
    assert await live.flush(0.1)
    assert live.calls == {}
