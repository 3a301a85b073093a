"""The live feed end to end: a real call through Kamailio (sipp as the resident, a softphone as her
doctor) is seen on the events channel as offered → routed → ringing(the doctor) → answered(the
doctor) → ended, and its entry in the calls-in-progress hash appears and is gone at the end."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from recordings.live import EVENTS_CHANNEL, LIVE_CALLS_KEY
from tests.hotline_peer import (  # noqa: F401  (fresh_kamailio: this module's `kamailio` fixture)
    Hotline,
    calls_done,
    fresh_kamailio,
    hotline_fixture,
)
from tests.rtp_pcap import ulaw_sine, write_rtp_pcap
from tests.sip_peers import Kamailio
from tests.test_call_flow import TUESDAY_10, doctor_phone, resident_talks

pytestmark = pytest.mark.sip

day_hotline = hotline_fixture(TUESDAY_10, ring_timeout_s=3.0)


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rtp_pcap(tmp_path_factory.mktemp("voice") / "440.pcap", ulaw_sine(440, 12))


async def test_a_real_call_is_seen_live_from_offer_to_end(
        day_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, redis: aioredis.Redis,
        voice: Path, tmp_path: Path) -> None:
    doctor_id = await pool.fetchval("SELECT id FROM staff WHERE sip_uri = 'sip:1001@127.0.0.1'")
    pubsub = redis.pubsub()
    await pubsub.subscribe(EVENTS_CHANNEL)
    seen: list[dict] = []
    entry_while_talking: list[dict | None] = []

    async def watch() -> None:
        while not seen or seen[-1]["type"] != "ended":
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            event = json.loads(message["data"])
            seen.append(event)
            if event["type"] == "answered":
                raw = await redis.hget(LIVE_CALLS_KEY, event["call_id"])
                entry_while_talking.append(None if raw is None else json.loads(raw))

    watcher = asyncio.create_task(watch())
    phone = await doctor_phone("1001", kamailio, tmp_path, tone_hz=1000)
    try:
        await resident_talks(kamailio, voice)
        await calls_done(day_hotline)
        await asyncio.wait_for(watcher, 10)
    finally:
        watcher.cancel()
        await phone.stop()
        await pubsub.aclose()
    record = await pool.fetchrow("SELECT id, call_id, resident_id FROM call_records")
    mine = [e for e in seen if e.get("call_id") == record["call_id"]]
    assert [e["type"] for e in mine] == ["offered", "placed", "routed", "ringing", "answered", "ended"], seen
    offered, placed, routed, ringing, answered, ended = mine
    assert [e["seq"] for e in mine] == sorted(e["seq"] for e in mine)
    assert offered["call"]["caller"] == "138****0001" and offered["call"]["record_id"] == record["id"]
    # where the call belongs is told as soon as it is written, before the greeting ends
    assert placed["call"]["resident_id"] == record["resident_id"] and placed["call"]["team_id"] is not None
    assert routed["call"]["resident_id"] == record["resident_id"] and routed["call"]["team_id"] is not None
    assert ringing["call"]["ringing"] == [doctor_id]
    assert answered["call"]["staff_id"] == doctor_id and answered["call"]["state"] == "talking"
    assert ended["call"]["disposition"] == "connected"
    assert entry_while_talking and entry_while_talking[0] is not None
    assert entry_while_talking[0]["state"] == "talking" and entry_while_talking[0]["staff_id"] == doctor_id
    assert await redis.hlen(LIVE_CALLS_KEY) == 0  # gone with the call
    assert "13800000001" not in json.dumps(seen)
