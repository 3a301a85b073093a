"""Staff presence in Redis (routing.presence): states, claims across nodes, expiry, and ringing
without presence when Redis is dead, hung or comes back — against the real test Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
import redis.exceptions
import structlog
from redis.asyncio.connection import parse_url

from ivr.hunt import keep_on_call
from routing.presence import (
    Kind,
    Presence,
    StaffState,
    claim_key,
    describe,
    presence_client,
    presence_key,
)

# 10:02 in Asia/Shanghai
NOW = datetime(2026, 11, 24, 2, 2, tzinfo=UTC)
DOCTOR, ASSISTANT, NURSE = 7, 8, 9


class FakeMonotonic:
    """A monotonic clock the test moves: back-off periods end exactly when the test says."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def wait_until(predicate: Callable[[], Awaitable[object]], within_s: float,
                     step_s: float = 0.05) -> float:
    """Seconds until the async predicate holds; fails the test after `within_s`."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if await predicate():
            return time.monotonic() - started
        await asyncio.sleep(step_s)
    pytest.fail(f"not within {within_s} s")


@pytest.fixture
async def presence(redis: aioredis.Redis) -> AsyncIterator[Presence]:
    """Node 1, on the flushed test Redis; generous timeouts: these tests are about the logic.
    Failing the test if it ever answered without Redis keeps degraded mode from passing them."""
    p = Presence(redis, now=lambda: NOW, timeout_s=2.0)
    yield p
    assert p.degraded_operations == 0 and not p.degraded


@pytest.fixture
async def node2(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[Presence]:
    """A second service node: its own client and connections to the same Redis."""
    client = presence_client(redis_url, timeout_s=2.0)
    p = Presence(client, now=lambda: NOW + timedelta(seconds=5), timeout_s=2.0)
    yield p
    await client.aclose()
    assert p.degraded_operations == 0


# --- states --------------------------------------------------------------------------------------

async def test_nobody_known_is_available_and_one_round_trip_reads_everyone(
    presence: Presence, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await presence.set_state(NURSE, "dnd")
    commands: list[str] = []
    execute = redis.execute_command

    async def counting(*args, **options):
        commands.append(args[0])
        return await execute(*args, **options)

    monkeypatch.setattr(redis, "execute_command", counting)
    states = await presence.states([DOCTOR, ASSISTANT, NURSE, 10, 11, DOCTOR])
    assert commands == ["MGET"]
    assert list(states) == [DOCTOR, ASSISTANT, NURSE, 10, 11]
    assert states[DOCTOR] == StaffState(DOCTOR, Kind.AVAILABLE)
    assert states[DOCTOR].ringable and states[DOCTOR].describe() == "available"
    assert states[NURSE].kind is Kind.DND and not states[NURSE].ringable
    assert await presence.states([]) == {}
    assert commands == ["MGET"]  # nobody to ask about: no round trip


async def test_console_states_carry_since_and_available_clears_them(
    presence: Presence, redis: aioredis.Redis
) -> None:
    assert await presence.set_state(DOCTOR, Kind.DND)
    state = await presence.state(DOCTOR)
    assert (state.kind, state.since, state.call_id) == (Kind.DND, NOW, None)
    assert state.describe() == "do not disturb since 10:02"
    # the key layout the console and other nodes rely on
    assert json.loads(await redis.get(presence_key(DOCTOR))) == {
        "state": "dnd", "since": "2026-11-24T02:02:00+00:00"}
    assert await redis.ttl(presence_key(DOCTOR)) == -1  # until changed

    assert await presence.set_state(DOCTOR, "offline")
    state = await presence.state(DOCTOR)
    assert state.kind is Kind.OFFLINE and state.since == NOW
    assert state.describe() == "offline (not registered) since 10:02"

    assert await presence.set_state(DOCTOR, "available")
    assert (await presence.state(DOCTOR)).kind is Kind.AVAILABLE
    assert await redis.exists(presence_key(DOCTOR)) == 0
    with pytest.raises(ValueError, match="available, dnd or offline"):
        await presence.set_state(DOCTOR, Kind.ON_CALL)


async def test_an_unreachable_phone_is_offline_for_a_while_then_ringable_again(
    presence: Presence, redis: aioredis.Redis
) -> None:
    assert await presence.mark_offline(DOCTOR, ttl_s=1)
    state = await presence.state(DOCTOR)
    assert (state.kind, state.since, state.ringable) == (Kind.OFFLINE, NOW, False)
    assert 0 < await redis.pttl(presence_key(DOCTOR)) <= 1000
    took = await wait_until(lambda: _is(presence, DOCTOR, Kind.AVAILABLE), within_s=3)
    assert took > 0.5  # gone by expiry, not at once

    # marking again refreshes the expiry but keeps the first `since`
    assert await presence.mark_offline(ASSISTANT, ttl_s=1)
    later = Presence(redis, now=lambda: NOW + timedelta(minutes=1), timeout_s=2.0)
    assert await later.mark_offline(ASSISTANT, ttl_s=60)
    assert (await presence.state(ASSISTANT)).since == NOW
    assert await redis.pttl(presence_key(ASSISTANT)) > 50_000

    # never overrides what a person set, nor a call in progress
    await presence.set_state(NURSE, "dnd")
    assert not await presence.mark_offline(NURSE)
    assert (await presence.state(NURSE)).kind is Kind.DND
    await presence.set_state(10, "offline")  # the console's: no expiry, and it stays so
    assert not await presence.mark_offline(10, ttl_s=1)
    assert await redis.ttl(presence_key(10)) == -1
    await presence.call_started(11, "c1")
    assert not await presence.mark_offline(11)
    assert (await presence.state(11)).kind is Kind.ON_CALL


async def _is(presence: Presence, staff_id: int, kind: Kind) -> bool:
    return (await presence.state(staff_id)).kind is kind


# --- claims --------------------------------------------------------------------------------------

async def test_of_twenty_simultaneous_claims_exactly_one_wins(presence: Presence, redis: aioredis.Redis) -> None:
    results = await asyncio.gather(*(presence.claim(DOCTOR, f"call-{n}", 30) for n in range(20)))
    assert results.count(True) == 1
    winner = f"call-{results.index(True)}"
    state = await presence.state(DOCTOR)
    assert (state.kind, state.call_id, state.since) == (Kind.RINGING, winner, NOW)
    assert state.busy and not state.ringable
    assert state.describe() == "busy (ringing for another call since 10:02)"
    assert await redis.get(claim_key(DOCTOR)) == f"2026-11-24T02:02:00+00:00 {winner}".encode()
    assert 29_000 < await redis.pttl(claim_key(DOCTOR)) <= 30_000
    assert await presence.claim(DOCTOR, winner, 30)  # the owner claiming again: still its own


async def test_a_second_node_sees_the_first_nodes_claim(presence: Presence, node2: Presence) -> None:
    assert await presence.claim(DOCTOR, "node1-call", 30)
    seen = await node2.state(DOCTOR)
    assert (seen.kind, seen.call_id) == (Kind.RINGING, "node1-call")
    assert not await node2.claim(DOCTOR, "node2-call", 30)
    # and racing from both nodes at once, one call in all wins
    results = await asyncio.gather(*(p.claim(ASSISTANT, f"{name}-{n}", 30)
                                     for n in range(10) for name, p in (("a", presence), ("b", node2))))
    assert results.count(True) == 1


async def test_only_the_owning_call_releases_a_claim(presence: Presence, node2: Presence) -> None:
    assert await presence.claim(DOCTOR, "owner", 30)
    assert not await node2.release(DOCTOR, "intruder")
    assert not await presence.release(DOCTOR, "owner-but-longer")
    assert (await node2.state(DOCTOR)).call_id == "owner"
    assert not await node2.claim(DOCTOR, "intruder", 30)
    assert await presence.release(DOCTOR, "owner")
    assert (await node2.state(DOCTOR)).kind is Kind.AVAILABLE
    assert await node2.claim(DOCTOR, "intruder", 30)


async def test_a_claim_expires_by_itself_when_its_node_dies(presence: Presence, node2: Presence) -> None:
    assert await presence.claim(DOCTOR, "dead-node-call", 0.3)
    assert not await node2.claim(DOCTOR, "next-call", 30)
    await wait_until(lambda: node2.claim(DOCTOR, "next-call", 30), within_s=3)
    assert (await presence.state(DOCTOR)).call_id == "next-call"


async def test_extend_keeps_a_long_ring_claimed(presence: Presence, redis: aioredis.Redis) -> None:
    assert await presence.claim(DOCTOR, "long-ring", 0.5)
    assert await presence.extend(DOCTOR, "long-ring", 60)
    assert await redis.pttl(claim_key(DOCTOR)) > 50_000
    assert not await presence.extend(DOCTOR, "another", 60)
    assert not await presence.extend(ASSISTANT, "long-ring", 60)


async def test_an_answered_call_is_on_call_until_that_call_ends(
    presence: Presence, node2: Presence, redis: aioredis.Redis
) -> None:
    assert await presence.claim(DOCTOR, "c1", 30)
    assert await presence.call_started(DOCTOR, "c1", ttl_s=600)
    assert await redis.exists(claim_key(DOCTOR)) == 0  # the claim became the call
    state = await node2.state(DOCTOR)
    assert (state.kind, state.call_id, state.since) == (Kind.ON_CALL, "c1", NOW)
    assert state.describe() == "busy (on call since 10:02)"
    assert 590 < await redis.ttl(presence_key(DOCTOR)) <= 600
    # busy for every other call, though no claim key is left
    assert not await node2.claim(DOCTOR, "c2", 30)
    assert not await node2.call_ended(DOCTOR, "c2")
    assert not await presence.set_state(DOCTOR, "available")  # the call's end clears it
    assert (await node2.state(DOCTOR)).kind is Kind.ON_CALL
    assert await presence.extend(DOCTOR, "c1", 3600)
    assert 3590 < await redis.ttl(presence_key(DOCTOR)) <= 3600

    assert await presence.call_ended(DOCTOR, "c1")
    assert (await node2.state(DOCTOR)).kind is Kind.AVAILABLE
    assert await node2.claim(DOCTOR, "c2", 30)


async def test_a_call_longer_than_the_on_call_expiry_keeps_her_busy_until_it_ends(
    presence: Presence, node2: Presence
) -> None:
    """The expiry is there for a node that dies mid-call; a live call keeps refreshing it."""
    ttl_s = 0.6
    assert await presence.call_started(DOCTOR, "long-call", ttl_s=ttl_s)
    refreshing = asyncio.create_task(keep_on_call(presence, DOCTOR, "long-call", ttl_s))
    try:
        for _ in range(8):  # 2 s: more than three expiries
            await asyncio.sleep(0.25)
            assert (await node2.state(DOCTOR)).kind is Kind.ON_CALL
    finally:
        refreshing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refreshing
    # the node "died" (nothing refreshes): she is ringable again by herself
    await asyncio.sleep(ttl_s + 0.2)
    assert (await node2.state(DOCTOR)).kind is Kind.AVAILABLE


async def test_a_cancellation_the_client_turns_into_a_connection_error_is_still_a_cancellation(
    presence: Presence
) -> None:
    """redis-py drops the connection it was reading when its caller is cancelled, and may raise
    ConnectionError instead: presence must not take that for an outage and swallow the cancel
    (a cancelled keep_on_call went on refreshing a finished call, seen once in the suite)."""
    started = asyncio.Event()

    async def command_cut_by_cancel() -> int:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise redis.exceptions.ConnectionError("Connection closed by server.") from None
        return 1

    task = asyncio.create_task(presence._run("extend", command_cut_by_cancel, 0))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not presence.degraded and presence.degraded_operations == 0


async def test_people_on_dnd_or_offline_cannot_be_claimed(presence: Presence) -> None:
    await presence.set_state(DOCTOR, "dnd")
    await presence.mark_offline(ASSISTANT)
    assert not await presence.claim(DOCTOR, "c1", 30)
    assert not await presence.claim(ASSISTANT, "c1", 30)
    assert await presence.claim(NURSE, "c1", 30)
    await presence.set_state(DOCTOR, "available")
    assert await presence.claim(DOCTOR, "c1", 30)


async def test_a_garbled_value_reads_as_unknown_and_ringable(presence: Presence, redis: aioredis.Redis) -> None:
    await redis.set(presence_key(DOCTOR), b"not json")
    with structlog.testing.capture_logs() as logs:
        state = await presence.state(DOCTOR)
    assert state.kind is Kind.UNKNOWN and state.ringable
    assert [e["event"] for e in logs] == ["presence.bad_value"]


def test_descriptions_in_shanghai_time() -> None:
    on_call = StaffState(DOCTOR, Kind.ON_CALL, NOW, "c1")
    assert describe(on_call) == "busy (on call since 10:02)"
    assert describe(on_call, UTC) == "busy (on call since 02:02)"
    dnd = StaffState(DOCTOR, Kind.DND, datetime(2026, 11, 24, 1, 30, tzinfo=UTC))
    assert describe(dnd) == "do not disturb since 09:30"
    # read the next day: the date is said as well
    stale = StaffState(DOCTOR, Kind.DND, datetime(2026, 11, 23, 10, 30, tzinfo=UTC), as_of=NOW)
    assert describe(stale) == "do not disturb since 11-23 18:30"
    assert describe(StaffState(DOCTOR, Kind.OFFLINE, NOW)) == "offline (not registered) since 10:02"
    assert describe(StaffState(DOCTOR, Kind.UNKNOWN)) == "presence unknown (Redis unreachable)"
    assert describe(StaffState(DOCTOR, Kind.AVAILABLE)) == "available"


# --- Redis dead, hung, back ----------------------------------------------------------------------

def _degraded_events(logs: list[dict]) -> list[tuple[str, str]]:
    return [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("presence.")]


async def test_a_dead_redis_rings_without_presence_logged_once_and_counted(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    client = presence_client("redis://127.0.0.1:1/0")  # nothing listens on port 1
    commands: list[str] = []
    execute = client.execute_command

    async def counting(*args, **options):
        commands.append(args[0])
        return await execute(*args, **options)

    monkeypatch.setattr(client, "execute_command", counting)
    clock = FakeMonotonic()
    p = Presence(client, now=lambda: NOW, monotonic=clock)
    try:
        with structlog.testing.capture_logs() as logs:
            started = time.perf_counter()
            states = await p.states([DOCTOR, ASSISTANT])
            first_s = time.perf_counter() - started
            assert states == {DOCTOR: StaffState(DOCTOR, Kind.UNKNOWN),
                              ASSISTANT: StaffState(ASSISTANT, Kind.UNKNOWN)}
            assert all(s.ringable for s in states.values())
            assert p.degraded and p.degraded_operations == 1

            started = time.perf_counter()
            for n in range(50):  # inside the back-off: Redis is not even tried
                assert await p.claim(DOCTOR, f"call-{n}", 30)  # granted without a lock
                assert not await p.release(DOCTOR, f"call-{n}")
                assert not await p.call_started(DOCTOR, f"call-{n}")
                assert not await p.call_ended(DOCTOR, f"call-{n}")
                assert not await p.mark_offline(DOCTOR)
                assert not await p.set_state(DOCTOR, "dnd")
                assert (await p.state(DOCTOR)).kind is Kind.UNKNOWN
            skipped_s = time.perf_counter() - started
            assert p.degraded_operations == 1 + 50 * 7
            assert commands == ["MGET"]  # only the first operation tried Redis

            clock.t += 1.0  # back-off over: one operation probes, fails, no second warning
            assert await p.claim(DOCTOR, "probe", 30)
            assert p.degraded_operations == 2 + 50 * 7
            assert commands == ["MGET", "EVALSHA"]
    finally:
        await client.aclose()
    assert _degraded_events(logs) == [("presence.degraded", "warning")]
    warning = logs[0]
    assert warning["error"] == "Connection refused" and warning["op"] == "states"
    assert first_s < 0.5  # a refused connection: about a millisecond
    assert skipped_s < 0.5  # 350 operations without touching the network


async def test_a_hung_redis_costs_one_short_timeout_whatever_the_clients_settings() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # accepts, reads, never answers
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # the shared client's settings (store.redis.connect_redis): 3 s timeouts, default retries
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=3, socket_connect_timeout=3)
    p = Presence(client, timeout_s=0.05, monotonic=FakeMonotonic())
    try:
        with structlog.testing.capture_logs() as logs:
            started = time.perf_counter()
            granted = await p.claim(DOCTOR, "c1", 30)
            took = time.perf_counter() - started
            for _ in range(20):
                assert (await p.state(DOCTOR)).kind is Kind.UNKNOWN
    finally:
        await client.aclose()
        server.close()
    assert granted and p.degraded and p.degraded_operations == 21
    assert 0.04 < took < 0.5
    assert _degraded_events(logs) == [("presence.degraded", "warning")]
    assert logs[0]["error"] == "timed out"


class RedisSwitch:
    """A TCP front for the test Redis that can be switched off (connections cut, new ones
    closed at once) and on again: Redis dying and coming back, for the same client."""

    def __init__(self, redis_url: str):
        self.target = parse_url(redis_url)
        self.on = True
        self.accepted = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> aioredis.Redis:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return aioredis.Redis(host="127.0.0.1", port=port, db=self.target.get("db", 0),
                              username=self.target.get("username"), password=self.target.get("password"),
                              socket_timeout=0.5, socket_connect_timeout=0.5)

    def switch_off(self) -> None:
        self.on = False
        for w in list(self.writers):
            w.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if not self.on:
            writer.close()
            return
        if "path" in self.target:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target["path"])
        else:
            up_reader, up_writer = await asyncio.open_connection(self.target["host"], self.target.get("port", 6379))
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def stop(self) -> None:
        self.switch_off()
        if self.server is not None:
            self.server.close()


async def test_presence_comes_back_when_redis_does(redis_url: str, redis: aioredis.Redis) -> None:
    if redis_url.startswith("rediss://"):
        pytest.skip("the switch speaks plain TCP")
    switch = RedisSwitch(redis_url)
    client = await switch.start()
    clock = FakeMonotonic()
    p = Presence(client, now=lambda: NOW, timeout_s=1.0, backoff_s=1.0, monotonic=clock)
    try:
        with structlog.testing.capture_logs() as logs:
            assert await p.claim(DOCTOR, "before", 30)
            assert not await p.claim(DOCTOR, "during", 30)  # really held in Redis

            switch.switch_off()
            assert await p.claim(DOCTOR, "during", 30)  # Redis gone: granted without a lock
            assert p.degraded
            tried = switch.accepted
            for _ in range(30):
                assert (await p.state(DOCTOR)).kind is Kind.UNKNOWN
            assert switch.accepted == tried  # nobody knocked on Redis during the back-off

            switch.on = True
            assert (await p.state(DOCTOR)).kind is Kind.UNKNOWN  # still backing off
            assert switch.accepted == tried
            clock.t += 1.0
            state = await p.state(DOCTOR)  # the probe: Redis answers again
            assert not p.degraded
            assert (state.kind, state.call_id) == (Kind.RINGING, "before")
            assert not await p.claim(DOCTOR, "after", 30)
            assert p.degraded_operations == 32
    finally:
        await client.aclose()
        await switch.stop()
    assert _degraded_events(logs) == [("presence.degraded", "warning"), ("presence.restored", "info")]
    restored = logs[-1] if logs[-1]["event"] == "presence.restored" else next(
        e for e in logs if e["event"] == "presence.restored")
    assert restored["operations_without_redis"] == 32 and restored["degraded_for_s"] == 1.0


async def test_keep_on_call_stops_even_when_the_client_swallows_its_cancel() -> None:
    """A Redis client that eats the CancelledError delivered mid-command (as redis-py did, twice
    in the suite) must not keep the refresher alive: the cancel is still counted on the task."""
    extended = asyncio.Event()

    class Swallowing:
        async def extend(self, staff_id: int, call_id: str, ttl_s: float) -> bool:
            extended.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                return True  # the client's bug: the cancel is eaten, the command "succeeds"
            return True

    refreshing = asyncio.create_task(keep_on_call(Swallowing(), DOCTOR, "eaten", 0.03))  # type: ignore[arg-type]
    await asyncio.wait_for(extended.wait(), 5)
    refreshing.cancel()
    done, _ = await asyncio.wait({refreshing}, timeout=5)  # (wait_for would hang on a task that ignores cancel)
    assert refreshing in done and refreshing.cancelled(), "keep_on_call went on refreshing"
