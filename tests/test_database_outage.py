"""PostgreSQL stopped during sipp traffic (issue 9 §4): the hotline keeps answering, every call
leaves its record and every missed call its callback task — written once, after PostgreSQL is back.

The service runs on a PostgreSQL of this test's own (the session's is shared by every test and
must not be stopped), stopped with a fast shutdown while a call is in progress and started again
after HOTLINE_TEST_OUTAGE_S seconds (default 6; the issue's 60 s is a manual run of this test:
`HOTLINE_TEST_OUTAGE_S=60 HOTLINE_TEST_CALL_EVERY_S=2 pytest tests/test_database_outage.py -s`,
which prints the figures).
Nobody's phone is registered: every call is missed (the chain's phones are unreachable at once),
the caller leaves a message and hears the callback promise.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from store import db, embedded
from store.pii import PiiVault
from tests.conftest import TEST_PII_KEY
from tests.hotline_peer import Earpiece, calls_done, fresh_kamailio, hotline_at  # noqa: F401
from tests.rtp_pcap import ulaw_sine, write_rtp_pcap
from tests.sip_peers import Kamailio, run_sipp, sipp_result

OUTAGE_S = float(os.environ.get("HOTLINE_TEST_OUTAGE_S", "6"))
# A call every CALL_EVERY_S during the outage (at least two calls in it).
CALL_EVERY_S = float(os.environ.get("HOTLINE_TEST_CALL_EVERY_S", max(1.5, OUTAGE_S / 8)))

pytestmark = [pytest.mark.sip, pytest.mark.timeout(150 + 2 * OUTAGE_S)]

TUESDAY_10 = datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
ZHANG_GUILAN = "13800000001"  # a resident of the demo district, identified while PostgreSQL is up


async def test_postgresql_stopped_during_traffic_every_call_has_its_record_and_task_once(
        private_postgres: tuple[Path, str], kamailio: Kamailio, vault: PiiVault, redis: object,
        redis_url: str, tmp_path: Path) -> None:
    pg_dir, url = private_postgres
    voice = write_rtp_pcap(tmp_path / "440.pcap", ulaw_sine(440, 12))
    pool = await db.create_pool(url, max_size=2)
    calls: list[tuple[str, asyncio.subprocess.Process]] = []
    ears: list[Earpiece] = []

    async def call(number: str) -> None:
        ear = Earpiece()
        ears.append(ear)
        calls.append((number, await run_sipp(
            "resident_waits_for_doctor.xml", kamailio.port, service="hotline", caller=number, timeout_s=80,
            keys={"rtp_port": str(ear.port), "voice_pcap": str(voice)})))

    try:
        async with hotline_at(TUESDAY_10, kamailio=kamailio, database_url=url, pool=pool, vault=vault,
                              pii_key=TEST_PII_KEY, data_dir=tmp_path / "data", ring_timeout_s=3,
                              redis_url=redis_url) as hotline:
            await pool.close()
            service = hotline.service
            journal = service.replayer.journal  # type: ignore[union-attr]
            # 1: a call in progress when PostgreSQL goes
            await call(ZHANG_GUILAN)
            async with db.connection(url) as conn:
                for _ in range(200):  # bounded: 10 s for the INVITE to be answered
                    if await conn.fetchval("SELECT answered_at FROM call_records") is not None:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the first call was not answered")
            await asyncio.to_thread(embedded.stop_postgres, pg_dir)
            # 2: calls while it is away (residents of the demo and strangers alike)
            loop = asyncio.get_running_loop()
            back_at = loop.time() + OUTAGE_S
            during = 0
            while loop.time() < back_at:
                await call(f"139{during:08d}" if during % 2 else f"1380000{during + 2:04d}")
                during += 1
                await asyncio.sleep(min(CALL_EVERY_S, max(0.0, back_at - loop.time())))
            assert journal.holds_events() and service.replayer.call_log.degraded  # type: ignore[union-attr]
            await asyncio.to_thread(embedded.ensure_postgres, pg_dir)
            # 3: a call once it is back
            await call("13700000001")
            for number, sipp in calls:
                code, out = await sipp_result(sipp, timeout_s=90)
                assert code == 0, f"{number}: {out}"
            await calls_done(hotline)
            for _ in range(300):  # bounded: 30 s for the replayer's backoff and the backlog
                if not journal.holds_events() and not service.replayer.call_log.degraded:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the journal was not drained")
            replayed = service.replayer.total  # type: ignore[union-attr]
    finally:
        for ear in ears:
            ear.close()
        for _, sipp in calls:
            if sipp.returncode is None:
                sipp.kill()
                await sipp.wait()

    async with db.connection(url) as conn:
        records = await conn.fetch("SELECT * FROM call_records ORDER BY offered_at")
        attempts = await conn.fetch("SELECT call_record_id, seq FROM dial_attempts ORDER BY 1, 2")
        tasks = await conn.fetch("SELECT * FROM tasks")
        attached = await conn.fetch("SELECT * FROM callback_calls")
        voicemails = await conn.fetch("SELECT * FROM voicemails")
        leftover_ids = await conn.fetchval("SELECT count(*) FROM call_journal_applied")
    figures = {"outage_s": OUTAGE_S, "calls": len(calls), "records": len(records), "tasks": len(tasks),
               "calls_attached_to_tasks": len(attached), "voicemails": len(voicemails),
               "dial_attempts": len(attempts), "events_replayed": replayed.applied,
               "events_skipped": replayed.skipped, "events_rejected": replayed.rejected,
               "segments": replayed.segments}
    print("outage figures:", json.dumps(figures))

    assert during >= 2
    # every call has its record, once, finished
    assert len(records) == len(calls) == len({r["call_id"] for r in records})
    assert sorted(r["caller_number_masked"] for r in records) == sorted(
        n[:3] + "****" + n[-4:] for n, _ in calls)
    assert {r["disposition"] for r in records} == {"missed"}
    assert all(r["ended_at"] is not None and r["answered_at"] is not None for r in records)
    assert all(r["recording_sha256"] is not None for r in records)
    # the first call was identified before PostgreSQL went; those during the outage could not be
    # and were routed as unknown callers (the duty desk)
    assert records[0]["resident_id"] is not None
    for r in records[1:1 + during]:
        assert r["resident_id"] is None and "unknown caller" in r["route_reason"], r["route_reason"]
        steps = [s["step"] for s in json.loads(r["route_explanation"])["steps"]]
        assert "desk" in steps and "own_doctor" not in steps, steps
    # every dial attempt once, numbered 1… per call
    by_record: dict[int, list[int]] = {}
    for a in attempts:
        by_record.setdefault(a["call_record_id"], []).append(a["seq"])
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in by_record.values())
    # (the first call found the desk's phones unregistered: presence skips them for a while after)
    assert records[0]["id"] in by_record
    # every missed call its callback task (one per caller: every caller here is another), once
    assert len(tasks) == len(calls) and {t["status"] for t in tasks} == {"open"}
    assert sorted(a["call_record_id"] for a in attached) == sorted(r["id"] for r in records)
    assert len(voicemails) <= len(records) and len({v["call_record_id"] for v in voicemails}) == len(voicemails)
    assert replayed.rejected == 0 and leftover_ids == 0
    journal_dir = tmp_path / "data" / "journal"
    assert not list(journal_dir.glob("*.jsonl")) and not (journal_dir / "kept").exists()
