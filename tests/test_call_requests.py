"""The click-to-call request queue (recordings/call_requests.py) against a real PostgreSQL: one
node wins each request, a request outlives its node's death without being placed twice, cancel
and connect race safely, and bad requests write nothing."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.callbacks import Callbacks
from hotline.clock import Clock
from ivr.click_to_call import ClickToCall, ClickToCallSettings
from recordings.call_records import CallerNumber, CallPlace, CallRecords
from recordings.call_requests import CallRequestError, CallRequestNotFound, CallRequests
from store.pii import PiiVault
from tests.district import District, build_district
from tests.test_call_records_and_callbacks import missed_call

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=SH)


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    return await build_district(pool, vault, week_of=date(2026, 11, 22))


@pytest.fixture
async def task_id(pool: asyncpg.Pool, vault: PiiVault, district: District) -> int:
    _, owed = await missed_call(CallRecords(pool, vault), Callbacks(pool), vault, "missed-1@x", "13800000001",
                                T0, district.resident_id, district.doctor_id)
    return owed.task_id


async def _request(requests: CallRequests, task_id: int, district: District, pickup_s: float = 30.0):
    return await requests.request(task_id=task_id, staff_id=district.doctor_id, requested_by="test", at=T0,
                                  pickup_s=pickup_s)


async def _until_swept(requests: CallRequests, request_id: int, timeout_s: float = 5.0):
    """Sweep until the request is closed by it (its lease or pickup time runs on the database's
    clock); bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        swept = [r for r in await requests.sweep(T0) if r.id == request_id]
        if swept:
            return swept[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} was not swept in {timeout_s} s")


async def test_two_nodes_claiming_at_once_one_wins(pool: asyncpg.Pool, district: District, task_id: int) -> None:
    requests = CallRequests(pool)
    made = await _request(requests, task_id, district)
    assert made.state == "pending" and made.outcome is None
    a, b = await asyncio.gather(requests.claim("node-a", T0), requests.claim("node-b", T0))
    winners = [c for c in (a, b) if c is not None]
    assert len(winners) == 1 and winners[0].id == made.id and winners[0].state == "placing"
    assert (await requests.get(made.id)).claimed_by_node == winners[0].claimed_by_node  # type: ignore[union-attr]
    assert await requests.claim("node-c", T0) is None


async def test_many_requests_each_claimed_by_exactly_one_node(pool: asyncpg.Pool, vault: PiiVault,
                                                              district: District) -> None:
    records, callbacks, requests = CallRecords(pool, vault), Callbacks(pool), CallRequests(pool)
    made = []
    for n in range(12):  # a task per caller: one request under way per task
        _, owed = await missed_call(records, callbacks, vault, f"m-{n}@x", f"139000001{n:02d}", T0, None, None)
        made.append((await _request(requests, owed.task_id, district)).id)

    async def node(name: str) -> list[int]:
        taken = []
        while (claimed := await requests.claim(name, T0)) is not None:
            taken.append(claimed.id)
        return taken

    a, b, c = await asyncio.gather(node("a"), node("b"), node("c"))
    assert sorted(a + b + c) == sorted(made)  # each once, none twice


async def test_a_dead_nodes_request_is_closed_and_never_placed_again(
        pool: asyncpg.Pool, district: District, task_id: int) -> None:
    requests = CallRequests(pool)
    made = await _request(requests, task_id, district)
    claimed = await requests.claim("dying-node", T0, lease_s=0.2)
    assert claimed is not None
    # the node dies: no renewal; another node's sweep closes the request once its lease lapses
    lost = await _until_swept(requests, made.id)
    assert (lost.state, lost.outcome) == ("done", "failed") and "dying-node" in lost.reason
    assert await requests.claim("other-node", T0) is None  # not placed a second time
    assert [r.id for r in await requests.sweep(T0)] == []  # closed once
    # the dead node, restarted, finds nothing to close or finish
    assert await requests.close_own("dying-node", T0) == []
    assert not await requests.finish(made.id, "dying-node", outcome="answered", reason="", at=T0,
                                     call_record_id=None)


async def test_a_node_renewing_its_lease_keeps_its_request(pool: asyncpg.Pool, district: District,
                                                          task_id: int) -> None:
    requests = CallRequests(pool)
    made = await _request(requests, task_id, district)
    assert await requests.claim("live-node", T0, lease_s=0.3) is not None
    for _ in range(4):
        assert await requests.renew("live-node", lease_s=5.0) == 1
        assert [r.id for r in await requests.sweep(T0)] == []
        await asyncio.sleep(0.1)
    assert await requests.finish(made.id, "live-node", outcome="no_answer", reason="480", at=T0,
                                 call_record_id=None)
    done = await requests.get(made.id)
    assert done is not None and (done.state, done.outcome, done.ended_at) == ("done", "no_answer", T0)


async def test_a_connected_call_whose_node_died_counts_as_answered(
        pool: asyncpg.Pool, vault: PiiVault, district: District, task_id: int) -> None:
    requests, records = CallRequests(pool), CallRecords(pool, vault, "n1")
    made = await _request(requests, task_id, district)
    await requests.claim("n1", T0, lease_s=60)
    record = await records.open_outbound("c2c-1@n1", CallerNumber.of(vault, "13800000001"), T0, task_id=task_id,
                                         resident_id=district.resident_id, place=CallPlace(None, district.district_id))
    assert await requests.connect(made.id, "n1", record)
    closed = await requests.close_own("n1", T0)  # the node restarted
    assert [(r.id, r.outcome, r.call_record_id) for r in closed] == [(made.id, "answered", record)]
    row = await pool.fetchrow("SELECT direction, task_id FROM call_records WHERE id = $1", record)
    assert dict(row) == {"direction": "outbound", "task_id": task_id}


async def test_a_request_nobody_takes_in_time_is_dropped(pool: asyncpg.Pool, district: District,
                                                        task_id: int) -> None:
    requests = CallRequests(pool)
    made = await _request(requests, task_id, district, pickup_s=0.2)
    dropped = await _until_swept(requests, made.id)
    assert (dropped.outcome, dropped.reason) == ("failed", "no service node took the request in time")
    assert await requests.claim("late-node", T0) is None


async def test_cancel_before_and_after_the_resident_answers(pool: asyncpg.Pool, vault: PiiVault,
                                                           district: District, task_id: int) -> None:
    requests = CallRequests(pool)
    # pending: closed at once, no node will take it
    first = await _request(requests, task_id, district)
    cancelled = await requests.cancel(first.id, by="test", at=T0)
    assert (cancelled.state, cancelled.outcome) == ("cancelled", "cancelled")
    assert await requests.claim("n", T0) is None
    assert (await requests.cancel(first.id, by="test", at=T0)).outcome == "cancelled"  # twice: harmless
    # placing: marked; the node's connect loses the race and hangs up
    second = await _request(requests, task_id, district)
    await requests.claim("n", T0)
    marked = await requests.cancel(second.id, by="test", at=T0)
    assert (marked.state, marked.outcome) == ("cancelled", None)
    assert await requests.cancelled(second.id)
    assert not await requests.connect(second.id, "n", 1)
    assert await requests.finish(second.id, "n", outcome="cancelled", reason="", at=T0, call_record_id=None)
    assert (await requests.get(second.id)).state == "cancelled"  # type: ignore[union-attr]
    # connected: too late; finished: too late
    third = await _request(requests, task_id, district)
    await requests.claim("n", T0)
    record = await CallRecords(pool, vault, "n").open_outbound(
        "c2c-3@n", CallerNumber.of(vault, "13800000001"), T0, task_id=task_id, resident_id=None, place=CallPlace())
    assert await requests.connect(third.id, "n", record)
    with pytest.raises(CallRequestError, match="has answered"):
        await requests.cancel(third.id, by="test", at=T0)
    await requests.finish(third.id, "n", outcome="answered", reason="", at=T0, call_record_id=record)
    with pytest.raises(CallRequestError, match="has finished"):
        await requests.cancel(third.id, by="test", at=T0)
    with pytest.raises(CallRequestNotFound):
        await requests.cancel(999999, by="test", at=T0)


async def test_bad_requests_are_refused_and_write_nothing(pool: asyncpg.Pool, district: District,
                                                         task_id: int) -> None:
    requests = CallRequests(pool)
    with pytest.raises(CallRequestNotFound, match="task 999999"):
        await requests.request(task_id=999999, staff_id=district.doctor_id, requested_by="t", at=T0, pickup_s=30)
    with pytest.raises(CallRequestNotFound, match="staff member"):
        await requests.request(task_id=task_id, staff_id=999999, requested_by="t", at=T0, pickup_s=30)
    with pytest.raises(CallRequestError, match="has left"):
        await requests.request(task_id=task_id, staff_id=district.departed_doctor_id, requested_by="t", at=T0,
                               pickup_s=30)
    await pool.execute("UPDATE staff SET sip_uri = NULL WHERE id = $1", district.agent_id)
    with pytest.raises(CallRequestError, match="no softphone"):
        await requests.request(task_id=task_id, staff_id=district.agent_id, requested_by="t", at=T0, pickup_s=30)
    for by, pickup in (("", 30.0), ("x" * 201, 30.0), ("t", 0.0), ("t", 7200.0)):
        with pytest.raises(CallRequestError):
            await requests.request(task_id=task_id, staff_id=district.doctor_id, requested_by=by, at=T0,
                                   pickup_s=pickup)
    assert await pool.fetchval("SELECT count(*) FROM click_to_call_requests") == 0
    made = await _request(requests, task_id, district)
    with pytest.raises(CallRequestError, match=f"already has a call under way \\(request {made.id}\\)"):
        await _request(requests, task_id, district)
    assert await pool.fetchval("SELECT count(*) FROM click_to_call_requests") == 1


async def test_waiting_wakes_on_the_outcome(pool: asyncpg.Pool, vault: PiiVault, district: District,
                                            task_id: int) -> None:
    requests = CallRequests(pool)
    made = await _request(requests, task_id, district)
    waiting = asyncio.create_task(requests.wait(made.id, timeout_s=20))
    await requests.claim("n", T0)
    await requests.finish(made.id, "n", outcome="busy", reason="486 Busy Here", at=T0, call_record_id=None)
    finished = await asyncio.wait_for(waiting, 10)
    assert (finished.outcome, finished.reason) == ("busy", "486 Busy Here")
    # and gives the request as it is when the time runs out
    _, owed = await missed_call(CallRecords(pool, vault), Callbacks(pool), vault, "m-2@x", "13900000222", T0,
                                None, None)
    other = await _request(requests, owed.task_id, district)
    assert (await requests.wait(other.id, timeout_s=0.2)).state == "pending"


async def test_call_records_say_which_way_the_call_went(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval(
        "SELECT column_default FROM information_schema.columns"
        " WHERE table_name = 'call_records' AND column_name = 'direction'") == "'inbound'::text"
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("INSERT INTO call_records (call_id, offered_at, direction) VALUES ('x', now(), 'sideways')")


# -- service nodes taking requests (ivr/click_to_call.py) -------------------------------------

def _node(pool: asyncpg.Pool, vault: PiiVault, database_url: str, name: str, told: list[Any],
          tmp_path: Path) -> ClickToCall:
    async def no_dial(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("nothing here may be dialled")

    async def on_outcome(*args: Any) -> None:
        told.append((name, *args))

    return ClickToCall(requests=CallRequests(pool), records=CallRecords(pool, vault, name), pool=pool,
                       database_url=database_url, vault=vault, clock=Clock(T0), dial=no_dial, node=name,
                       settings=ClickToCallSettings(recordings_dir=tmp_path, registrar_host="127.0.0.1"),
                       on_outcome=on_outcome)


async def test_a_restarted_node_closes_what_it_held_and_one_node_takes_each_request(
        pool: asyncpg.Pool, vault: PiiVault, database_url: str, district: District, task_id: int,
        tmp_path: Path) -> None:
    requests = CallRequests(pool)
    held = await _request(requests, task_id, district)
    await requests.claim("node-a", T0, lease_s=600)  # node-a dies holding it
    told: list[Any] = []
    a, b = (_node(pool, vault, database_url, name, told, tmp_path) for name in ("node-a", "node-b"))
    await a.start()  # node-a again: closes its own at once, not after the lease
    await b.start()
    try:
        assert told == [("node-a", task_id, district.doctor_id, None, "failed")]
        closed = await requests.get(held.id)
        assert closed is not None and closed.reason == "the node restarted during the call"
        # a new request whose staff member lost her softphone meanwhile: one node takes it and
        # finds nobody to ring (nothing is dialled), the other never sees it
        made = await _request(requests, task_id, district)
        await pool.execute("UPDATE staff SET sip_uri = NULL WHERE id = $1", district.doctor_id)
        done = await requests.wait(made.id, timeout_s=10)
        assert (done.state, done.outcome) == ("done", "staff_unreachable")
        assert done.claimed_by_node in ("node-a", "node-b")
        for node in (a, b):  # told once its call task ends, just after the outcome is stored
            if node.calls:
                await asyncio.wait(list(node.calls.values()), timeout=10)
        assert told[1:] == [(done.claimed_by_node, task_id, district.doctor_id, None, "staff_unreachable")]
    finally:
        await a.stop()
        await b.stop()
