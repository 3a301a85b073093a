"""Issue 11 told end to end, in the order the issue tells it, over real SIP (Kamailio, sipp,
baresip), real Chromium and a moved clock — one story, one database:

1. Tuesday 07:58:40 (the service's clock; it then runs at real speed): two residents of Dr. 王
   (BH0001, softphone 1001) call the hotline; the night duty doctor's phone is not there, nobody
   answers: each call opens a callback task owned by the duty doctor.
2. 08:00: the watcher's shift change gives them to the family doctor (an owner_changed event).
3. She opens 张桂兰's task in Chromium and clicks 回拨: her baresip rings and answers, the
   resident (sipp behind the PSTN trunk) answers, both voices are in the recording; she closes
   the task with a note — done, with the call as its evidence.
4. The second task: the resident's phone is busy — a counted attempt; 回拨 again is refused
   before the kind's 30 minutes.
5. The night's handover sheet is built (`hotline handover build`) and she signs (签收) an item
   in Chromium.
6. A third task (a missed call at 00:30, due 08:30) is left alone. The service's watcher steps
   down and two watcher nodes (tests/watcher_node.py, the clock at 08:29:58) take over: the
   leader breaches and escalates it, is SIGKILLed in the middle of its sweeps, the other takes
   over within 10 s, and nothing is escalated twice.
7. `hotline promises check --since` the night before: every promise kept (exit 0).
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from playwright.async_api import Browser, Page, expect

from handover.callbacks import Callbacks
from recordings.call_records import CallRecords
from routing.records import PHONE
from store.pii import PiiVault
from store.redis import connect_redis
from tests.hotline_peer import Earpiece, Hotline, calls_done, hotline_fixture
from tests.rtp_pcap import ulaw_sine, write_rtp_pcap
from tests.sip_peers import Kamailio, run_sipp, sipp_result
from tests.softphone import Softphone
from tests.test_call_records_and_callbacks import missed_call
from tests.test_click_to_call_e2e import (  # noqa: F401 — fixtures: Kamailio with the PSTN trunk, the sipp resident, her baresip
    DOCTOR_HZ,
    DOCTOR_NO,
    HOTLINE_NUMBER,
    OUTBOUND_RECORDING,
    RESIDENT_HZ,
    ZHANG_GUILAN,
    doctor,
    finished,
    hotline_cli,
    kamailio,
    outcome_of,
    task_told,
    trunk,
    trunk_port,
)
from tests.test_console_e2e import Pages, Site
from tests.test_softphones_e2e import until_talking
from tests.test_watcher_e2e import Node, start_node
from tests.tones import describe, has_tone, read_wav
from web.server import console_site

pytestmark = [pytest.mark.sip, pytest.mark.timeout(300)]

SH = ZoneInfo("Asia/Shanghai")
MONDAY = datetime(2026, 11, 23, tzinfo=SH)
START = datetime(2026, 11, 24, 7, 58, 40, tzinfo=SH)  # a Tuesday, a working day
EIGHT = datetime(2026, 11, 24, 8, 0, tzinfo=SH)  # the day window of a working day opens
LEFT_ALONE_AT = datetime(2026, 11, 24, 0, 30, tzinfo=SH)  # due 08:30
NODES_START = datetime(2026, 11, 24, 8, 29, 58, tzinfo=SH)

hotline = hotline_fixture(START, env={
    "HOTLINE_CALLBACK_CALLER_ID": HOTLINE_NUMBER, "HOTLINE_CLICK_TO_CALL_STAFF_RING_S": "10",
    "HOTLINE_CLICK_TO_CALL_RING_S": "15", "HOTLINE_WATCH_SWEEP_S": "0.5",
    "HOTLINE_WATCH_POLL_S": "0.5"})


async def until(what: str, check: Any, timeout_s: float, every_s: float = 0.1) -> Any:
    """check() until it returns something true (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (found := await check()):
        assert loop.time() < deadline, f"{what}: not within {timeout_s} s"
        await asyncio.sleep(every_s)
    return found


async def swept(node: Node, sweeps: int) -> bool:
    return node.sweeps >= sweeps


async def her_residents(pool: asyncpg.Pool, vault: PiiVault, doctor_id: int) -> list[tuple[int, str]]:
    """Two more residents on Dr. 王's list, each alone on a mobile number of their own."""
    rows = await pool.fetch(
        """SELECT p.resident_id, p.phone_enc FROM contracts k
             JOIN resident_phones p ON p.resident_id = k.resident_id AND p.position = 0
            WHERE k.doctor_id = $1 AND $2::date BETWEEN k.starts_on AND k.ends_on
              AND p.phone_hash <> $3 AND p.phone_masked LIKE '1%'
              AND (SELECT count(*) FROM resident_phones q WHERE q.phone_hash = p.phone_hash) = 1
              AND (SELECT count(*) FROM resident_phones q WHERE q.resident_id = p.resident_id) = 1
            ORDER BY p.resident_id LIMIT 2""",
        doctor_id, START.date(), vault.lookup_hash(PHONE, ZHANG_GUILAN))
    assert len(rows) == 2, rows
    return [(r["resident_id"], vault.decrypt(PHONE, r["phone_enc"])) for r in rows]


async def nobody_answers(proxy: Kamailio, voice: Path, caller: str) -> None:
    """The resident presses 1 and waits until the service, having found nobody, hangs up."""
    ear = Earpiece()
    try:
        sipp = await run_sipp("resident_waits_for_doctor.xml", proxy.port, service="hotline",
                              caller=caller, timeout_s=80,
                              keys={"rtp_port": str(ear.port), "voice_pcap": str(voice)})
        code, out = await sipp_result(sipp, timeout_s=90)
        assert code == 0, out
    finally:
        ear.close()


async def task_of(pool: asyncpg.Pool, resident_id: int) -> asyncpg.Record:
    return await pool.fetchrow("SELECT * FROM tasks WHERE kind = 'callback' AND resident_id = $1", resident_id)


@pytest.fixture
async def site(hotline: Hotline, vault: PiiVault, redis_url: str) -> AsyncIterator[Site]:
    """The console beside the service, on its pool, Redis and clock (as `hotline serve` runs it)."""
    service = hotline.service
    assert service.pool is not None
    redis = await connect_redis(service.redis_url)
    try:
        async with console_site(pool=service.pool, redis=redis, vault=vault, tz=SH, now=service.clock.now,
                                host="127.0.0.1", port=0, redis_url=service.redis_url) as running:
            yield Site(running, service.pool, redis)
    finally:
        await redis.aclose()


@pytest.fixture
async def pages(browser: Browser, site: Site) -> AsyncIterator[Pages]:
    made = Pages(browser, site)
    try:
        yield made
    finally:
        await made.close()
    assert not made.problems, "\n".join(made.problems)


async def click_to_call(page: Page, task_id: int) -> None:
    await page.goto(f"/tasks/{task_id}")
    await page.locator("#click-to-call").click()
    await expect(page.locator("#call-status")).not_to_contain_text("正在振铃")


async def test_the_promises_of_a_night_and_a_morning(
        hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, vault: PiiVault,  # noqa: F811
        database_url: str, cli_env: dict[str, str], trunk: Any, doctor: Softphone,  # noqa: F811
        site: Site, pages: Pages, tmp_path: Path) -> None:
    clock = hotline.service.clock
    family_doctor = await pool.fetchval("SELECT id FROM staff WHERE staff_no = $1", DOCTOR_NO)
    zhang = await pool.fetchval("SELECT resident_id FROM resident_phones WHERE phone_hash = $1",
                                vault.lookup_hash(PHONE, ZHANG_GUILAN))
    (second, second_number), (third, third_number) = await her_residents(pool, vault, family_doctor)
    duty_doctor = await pool.fetchval(
        """SELECT s.doctor_id FROM duty_shifts s JOIN centers c ON c.id = s.center_id
            WHERE c.name = '北塘街' AND s.kind = 'duty' AND tstzrange(s.starts_at, s.ends_at) @> $1::timestamptz""",
        START)
    assert duty_doctor is not None and duty_doctor != family_doctor

    # 1. the night: two residents call, the duty doctor's phone is not there, nobody answers
    voice = write_rtp_pcap(tmp_path / "440.pcap", ulaw_sine(440, 12))
    await asyncio.gather(nobody_answers(kamailio, voice, ZHANG_GUILAN),
                         nobody_answers(kamailio, voice, second_number))
    await calls_done(hotline)
    assert doctor.incoming_calls == 0  # at night the family doctor's phone is not rung
    night_calls = await pool.fetch("SELECT * FROM call_records WHERE direction = 'inbound'")
    assert {(c["resident_id"], c["disposition"], c["connected_at"]) for c in night_calls} == \
        {(zhang, "missed", None), (second, "missed", None)}
    first_task, second_task = await task_of(pool, zhang), await task_of(pool, second)
    for task in (first_task, second_task):
        assert task["opened_at"] < EIGHT, "the calls ended after 08:00: start the clock earlier"
        opened = await pool.fetchrow("SELECT * FROM task_events WHERE task_id = $1 AND event = 'opened'", task["id"])
        assert opened["owner_to"] == duty_doctor
        assert task["due_at"] == task["opened_at"] + timedelta(hours=8)
    # the third resident's call at 00:30, missed too (a record of the night, made directly)
    _, owed = await missed_call(CallRecords(pool, vault), Callbacks(pool), vault, "missed-0030@story",
                                third_number, LEFT_ALONE_AT, third, duty_doctor)
    third_task = owed.task_id

    # 2. 08:00: the shift change gives all three to the family doctor; the deadline stays
    async def moved() -> bool:
        return await pool.fetchval(
            """SELECT count(*) FROM task_events WHERE event = 'owner_changed' AND owner_from = $1
                AND owner_to = $2 AND task_id = ANY($3::bigint[])""",
            duty_doctor, family_doctor, [first_task["id"], second_task["id"], third_task]) == 3
    await until("the shift change at 08:00", moved, timeout_s=(EIGHT - clock.now()).total_seconds() + 15)
    changed_at = await pool.fetchval(
        "SELECT max(at) FROM task_events WHERE event = 'owner_changed' AND task_id = $1", first_task["id"])
    assert EIGHT <= changed_at < EIGHT + timedelta(seconds=5)
    assert (await task_of(pool, zhang))["due_at"] == first_task["due_at"]

    # 3. she calls 张桂兰 back from the task page: her phone first, then the resident's
    her = await site.login_for(DOCTOR_NO)
    page = await pages.new(her)
    resident = await trunk("resident_answers_trunk_call.xml")
    await click_to_call(page, first_task["id"])
    await doctor.wait_event("CALL_ESTABLISHED", direction="incoming", timeout_s=15)
    await until_talking(pool, query=OUTBOUND_RECORDING)
    await doctor.hangup()
    sipp_code, sipp_log = await resident.result()
    assert sipp_code == 0, sipp_log
    request = await outcome_of(pool, first_task["id"])
    assert (request["state"], request["outcome"], request["staff_id"]) == ("done", "answered", family_doctor)
    record = await pool.fetchrow("SELECT * FROM call_records WHERE id = $1", request["call_record_id"])
    assert (record["direction"], record["task_id"], record["answered_by"]) == \
        ("outbound", first_task["id"], family_doctor)
    recording = Path(record["recording_path"])
    assert hashlib.sha256(await asyncio.to_thread(recording.read_bytes)).hexdigest() == record["recording_sha256"]
    wav = await asyncio.to_thread(read_wav, recording)
    talk = slice(-wav.rate * 2, -wav.rate // 2)
    left, right = wav.channels[0][talk], wav.channels[1][talk]
    assert has_tone(left, wav.rate, RESIDENT_HZ), "resident: " + describe(left, wav.rate)
    assert has_tone(right, wav.rate, DOCTOR_HZ), "doctor: " + describe(right, wav.rate)
    await task_told(pool, first_task["id"], "call_answered")
    # … and closes it with a note: done, the call its evidence
    await page.goto(f"/tasks/{first_task['id']}")
    close = page.locator("#close-form")
    await close.locator("textarea[name=note]").fill("已回电：血糖偏高，已调整用药，周五复诊")
    async with page.expect_navigation():
        await close.get_by_role("button", name="关闭任务").click()
    await expect(page.locator("#close-note")).to_have_text("已回电：血糖偏高，已调整用药，周五复诊")
    done = await pool.fetchrow("SELECT * FROM tasks WHERE id = $1", first_task["id"])
    assert (done["status"], done["evidence_call_id"], done["overdue_at"]) == ("done", record["id"], None)

    # 4. the second resident's phone is busy: a counted attempt, and no retry before 30 minutes
    busy = await trunk("doctor_busy.xml")
    await click_to_call(page, second_task["id"])
    sipp_code, sipp_log = await busy.result()
    assert sipp_code == 0, sipp_log
    assert (await outcome_of(pool, second_task["id"]))["outcome"] == "busy"
    tried = await task_told(pool, second_task["id"], "attempt")
    assert tried.attempts == 1 and tried.owner_staff_id == family_doctor
    requests = await pool.fetchval("SELECT count(*) FROM click_to_call_requests")
    await page.goto(f"/tasks/{second_task['id']}")
    await expect(page.locator("#attempts-count")).to_have_text("1")
    await page.locator("#click-to-call").click()
    await expect(page.locator("#call-status")).to_contain_text("无法回拨")
    await expect(page.locator("#call-status")).to_contain_text("后可再次回拨")  # the kind's 30 min, in Chinese
    assert await pool.fetchval("SELECT count(*) FROM click_to_call_requests") == requests

    # 5. the night's handover sheet, signed (签收) by the family doctor in Chromium
    built = await finished(await hotline_cli({**cli_env, "HOTLINE_CLOCK_START": clock.now().isoformat()},
                                             "handover", "build", "--night", MONDAY.date().isoformat()))
    assert built[0] == 0, built
    item = await pool.fetchrow(
        """SELECT i.id, i.sheet_id, i.task_id FROM handover_items i JOIN tasks t ON t.id = i.task_id
            WHERE t.owner_staff_id = $1 AND t.status = 'open' ORDER BY i.id LIMIT 1""", family_doctor)
    assert item is not None, built

    # due at 09:00, so within its hour: the watcher warns it (a new version of the task) at its
    # next sweep; she opens the sheet after that, else her 签收 names a version already gone
    async def warned() -> bool:
        return await pool.fetchval("SELECT warned_at IS NOT NULL FROM tasks WHERE id = $1", item["task_id"])
    await until("the warning of the handover item due at 09:00", warned, timeout_s=10)
    await page.goto(f"/handover/sheets/{item['sheet_id']}")
    async with page.expect_navigation():
        await page.locator(f"#item-{item['id']}").get_by_role("button", name="签收").click()
    await expect(page.locator(f"#item-{item['id']} .acknowledged")).to_contain_text("已签收")
    assert await pool.fetchval("SELECT status FROM tasks WHERE id = $1", item["task_id"]) == "done"

    # 6. the third task, left alone, comes due at 08:30; the service's watcher steps down, two
    # nodes' watchers take over, the leader is killed mid-sweep: escalated exactly once
    assert hotline.service.watcher is not None
    await hotline.service.watcher.stop()
    assert await pool.fetchval("SELECT escalated_at FROM tasks WHERE id = $1", third_task) is None
    loop = asyncio.get_running_loop()
    nodes_started = loop.time()
    a, b = await start_node(database_url, NODES_START, "a"), await start_node(database_url, NODES_START, "b")
    try:
        await asyncio.wait_for(asyncio.wait([asyncio.create_task(a.leading.wait()),
                                             asyncio.create_task(b.leading.wait())],
                                            return_when=asyncio.FIRST_COMPLETED), 30)
        leader, other = (a, b) if a.leading.is_set() else (b, a)

        async def escalated() -> bool:
            return await pool.fetchval("SELECT escalated_at IS NOT NULL FROM tasks WHERE id = $1", third_task)
        await until("the breach of the task left alone", escalated, timeout_s=30, every_s=0.05)
        sweeps = leader.sweeps
        await until("the leader's next sweep", lambda: swept(leader, sweeps + 1), 10, 0.01)
        assert not other.leading.is_set()
        leader.proc.send_signal(signal.SIGKILL)
        killed = loop.time()
        await asyncio.wait_for(other.leading.wait(), 10)
        assert loop.time() - killed < 10
        taken_over = other.sweeps
        await until("the new leader's sweeps", lambda: swept(other, taken_over + 3), 10, 0.05)
    finally:
        await a.stop()
        await b.stop()
    history = await pool.fetch("SELECT event, version FROM task_events WHERE task_id = $1 ORDER BY version", third_task)
    events = [h["event"] for h in history]
    assert (events.count("overdue"), events.count("escalated")) == (1, 1), events
    assert len({h["version"] for h in history}) == len(history)
    escalations = await pool.fetch("SELECT staff_id, role FROM task_escalations WHERE task_id = $1", third_task)
    assert {e["role"] for e in escalations} == {"team_lead", "director"}
    assert len({e["staff_id"] for e in escalations}) == len(escalations)
    assert await pool.fetchval("SELECT overdue_at FROM tasks WHERE id = $1", third_task) == \
        LEFT_ALONE_AT + timedelta(hours=8)
    # (the other tasks are not due yet: nothing else was escalated)
    assert await pool.fetchval("SELECT count(*) FROM task_escalations WHERE task_id <> $1", third_task) == 0

    # 7. every promise of the night and the morning kept
    judged_at = NODES_START + timedelta(seconds=loop.time() - nodes_started)
    check = await finished(await hotline_cli(cli_env, "promises", "check", "--since", MONDAY.date().isoformat(),
                                             "--at", judged_at.isoformat()))
    assert check[0] == 0, check
