"""The console as people use it, over real calls: real Chromium (tests/browser.py) on the console,
the hotline service taking calls through Kamailio from sipp (the residents) to baresip (the staff's
softphones), both on ONE PostgreSQL and ONE Redis, as `hotline serve` runs them.

The servers are shared by the module (they are the slow part): a database of its own seeded with
the demo district (tests/hotline_peer.py), a Redis database of its own, Kamailio, the service with
its clock on a Tuesday 10:00, the console in this process on the service's pool and Redis and the
service's clock, and the family doctor's softphone (1001, BH0001, 张桂兰's doctor). One observed
call (`live_call`) is shared by the tests that look at it from different sides: the district
admin's live board, the doctor's screen-pop, the recording, the CSV export. Each other test
places its own call.

Timings are measured from the SIP side: the sipp process is started (it sends its INVITE at
once) → the call's row is in the board's table; the doctor's baresip reports the incoming call →
the caller's card is in her page. Both must be ≤ 1 s. Every wait is bounded, none is a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Response, expect

from recordings.live import EVENTS_CHANNEL
from routing.presence import Kind
from store import db
from store.pii import PiiVault
from store.redis import connect_redis
from tests.browser import TIMEOUT_MS, screenshot, sign_in
from tests.conftest import TEMPLATE_DB, TEST_PII_KEY, scratch_database
from tests.console import CHEAP_HASHER, SH, Login
from tests.hotline_peer import Earpiece, Hotline, calls_done, hotline_at
from tests.rtp_pcap import ulaw_sine, write_rtp_pcap
from tests.sip_peers import Kamailio, run_sipp, sipp_result, start_kamailio
from tests.softphone import Softphone
from tests.test_call_flow import TUESDAY_10, ZHANG_GUILAN
from web.app import CONSOLE
from web.server import ConsoleSite, console_site

pytestmark = [pytest.mark.sip, pytest.mark.timeout(240)]

PASSWORD = "e2e-console-pw"
E2E_REDIS_DB = 12  # the `redis` fixture flushes database 0 under other tests
UNKNOWN_NUMBER = "13999990077"  # in nobody's record
WITHIN_S = 1.0  # the issue: on the board / on the doctor's screen within 1 s
# The doctor lets it ring this long: the board shows 振铃中 and the card pops before she answers.
DOCTOR_ANSWERS_AFTER_S = 2.0
ROLES = ("family_doctor", "assistant", "night_doctor", "agent", "director", "supervisor",
         "district_admin")
# What each role's navigation shows (routing/scope.py CAPABILITIES, written out on purpose: the
# test states the expectation, it does not recompute it from the code under test).
NAVIGATION = {
    "family_doctor": ["工作台", "交班", "转诊", "通话记录"],
    "assistant": ["工作台", "交班", "转诊", "通话记录"],
    "night_doctor": ["工作台", "交班", "实时监控", "转诊", "通话记录"],
    "agent": ["工作台", "实时监控", "通话记录"],
    "director": ["工作台", "交班", "实时监控", "转诊", "通话记录", "报表", "履约"],
    "supervisor": ["工作台", "交班", "实时监控", "转诊", "通话记录", "报表", "履约", "审计"],
    "district_admin": ["工作台", "交班", "实时监控", "转诊", "通话记录", "报表", "履约", "审计", "管理"],
}
ANSWERS_CALLS = {"family_doctor", "assistant", "night_doctor", "agent"}
MASKED_ID = re.compile(r"\b\d{4}\*{13}[\dX]\b")


# --- the servers, shared by the module ---------------------------------------------------------

@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Any:
    proxy = start_kamailio(tmp_path_factory.mktemp("kamailio-console"))
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
async def e2e_database_url(pg_admin_url: str, template_url: str) -> AsyncIterator[str]:
    async with scratch_database(pg_admin_url, "hotline_console_e2e", TEMPLATE_DB) as url:
        yield url


@pytest.fixture(scope="module")
async def e2e_pool(e2e_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(e2e_database_url, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def e2e_redis_url(redis_url: str) -> str:
    from tests.console import console_redis_url

    url = console_redis_url(redis_url).replace("/11", f"/{E2E_REDIS_DB}").replace(
        "db=11", f"db={E2E_REDIS_DB}")
    assert url.endswith(f"{E2E_REDIS_DB}"), url
    client = await connect_redis(url)
    await client.flushdb()
    await client.aclose()
    return url


@pytest.fixture(scope="module")
async def hotline(kamailio: Kamailio, e2e_database_url: str, e2e_pool: asyncpg.Pool, vault: PiiVault,
                  e2e_redis_url: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[Hotline]:
    async with hotline_at(TUESDAY_10, kamailio=kamailio, database_url=e2e_database_url,
                          pool=e2e_pool, vault=vault, pii_key=TEST_PII_KEY,
                          data_dir=tmp_path_factory.mktemp("hotline-data"), redis_url=e2e_redis_url,
                          ring_timeout_s=10.0, menu_timeout_s=5.0,
                          check_promises=True) as running:  # once, when the module is done
        yield running


@dataclass
class Site:
    """The console beside the service, and the logins of the demo staff."""

    site: ConsoleSite
    pool: asyncpg.Pool
    redis: aioredis.Redis
    logins: dict[str, Login] = field(default_factory=dict)  # by role
    names: dict[int, str] = field(default_factory=dict)     # staff id → name

    @property
    def url(self) -> str:
        return self.site.url.rstrip("/")

    @property
    def accounts(self) -> Any:
        return self.site.app[CONSOLE].accounts

    @property
    def presence(self) -> Any:
        return self.site.app[CONSOLE].presence

    async def login_for(self, staff_no: str) -> Login:
        row = await self.pool.fetchrow("SELECT id, role, name FROM staff WHERE staff_no = $1", staff_no)
        await self.accounts.set_password(row["id"], PASSWORD, actor="test:e2e")
        self.names[row["id"]] = row["name"]
        return Login(row["id"], staff_no, PASSWORD, row["role"])


@pytest.fixture(scope="module")
async def console(hotline: Hotline, vault: PiiVault, e2e_redis_url: str) -> AsyncIterator[Site]:
    """The console in this process on the service's own pool, Redis and clock (as `hotline
    serve` runs it), a login with PASSWORD for one demo staff member of each role."""
    service = hotline.service
    assert service.pool is not None and service.redis_url == e2e_redis_url
    redis = await connect_redis(e2e_redis_url)
    try:
        async with console_site(pool=service.pool, redis=redis, vault=vault, tz=SH,
                                now=service.clock.now, host="127.0.0.1", port=0,
                                redis_url=e2e_redis_url) as site:
            made = Site(site, service.pool, redis)
            made.accounts.hasher = CHEAP_HASHER  # same rules, no second of argon2 per sign-in
            # the demo logins (web/accounts.py DEMO_LOGINS) and the doctor's assistant (2001)
            for staff_no in ("BH0001", "BH0030", "BH0033", "BH0017", "BH0025", "BH0036"):
                login = await made.login_for(staff_no)
                made.logins[login.role] = login
            assistant = await service.pool.fetchval(
                "SELECT staff_no FROM staff WHERE sip_uri = 'sip:2001@127.0.0.1'")
            made.logins["assistant"] = await made.login_for(assistant)
            assert set(made.logins) == set(ROLES), made.logins
            yield made
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
async def doctor_phone(kamailio: Kamailio, hotline: Hotline,
                       tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Softphone]:
    """Dr. 1001's softphone: answers after DOCTOR_ANSWERS_AFTER_S, says 1 kHz."""
    phone = Softphone("1001", kamailio.port, tmp_path_factory.mktemp("phone-1001"),
                      answer_after=DOCTOR_ANSWERS_AFTER_S, tone_hz=1000)
    await phone.start()
    yield phone
    await phone.stop()


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rtp_pcap(tmp_path_factory.mktemp("voice") / "440.pcap", ulaw_sine(440, 12))


# --- browser pages on this console ---------------------------------------------------------------

class Pages:
    """Pages in contexts of their own (one person each), on this module's console. A script
    error, a CSP violation or a missing static file is collected and fails the test."""

    def __init__(self, browser: Browser, site: Site):
        self.browser, self.site = browser, site
        self.contexts: list[BrowserContext] = []
        self.problems: list[str] = []

    async def new(self, who: Login | None = None, path: str | None = None) -> Page:
        context = await self.browser.new_context(base_url=self.site.url, locale="zh-CN",
                                                 timezone_id="Asia/Shanghai",
                                                 viewport={"width": 1280, "height": 800},
                                                 accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = await context.new_page()

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error" and not message.text.startswith("Failed to load resource"):
                self.problems.append(f"console error: {message.text}")

        def on_response(response: Response) -> None:
            if "/static/" in response.url and response.status >= 400:
                self.problems.append(f"{response.status} for {response.url}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("response", on_response)
        if who is not None:
            await sign_in(page, who)
            await expect(page.locator("header .who .name")).to_be_visible()
        if path is not None:
            await page.goto(path)
        return page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()
        self.contexts.clear()


@pytest.fixture
async def pages(browser: Browser, console: Site) -> AsyncIterator[Pages]:
    made = Pages(browser, console)
    try:
        yield made
    finally:
        await made.close()
    assert not made.problems, "\n".join(made.problems)


async def listening(page: Page) -> None:
    """Until the page's screen-pop stream is open (its `hello` came): a ring before would be lost."""
    await expect(page.locator("#screen-pop")).to_have_attribute("data-feed", "live")


async def board_live(page: Page) -> None:
    await expect(page.locator("#feed-status")).to_have_attribute("data-state", "live")


# --- the calls -----------------------------------------------------------------------------------

class Events:
    """The live feed's events as they are published (Redis pub/sub), each with the instant
    (time.monotonic()) it came, read by a task of its own while the test does other things."""

    def __init__(self, redis_url: str):
        self.url = redis_url
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> Events:
        self.client = await connect_redis(self.url)
        self.pubsub = self.client.pubsub()
        await self.pubsub.subscribe(EVENTS_CHANNEL)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.pubsub.aclose()
        await self.client.aclose()

    async def _read(self) -> None:
        while True:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "message":
                self.seen.append((time.monotonic(), json.loads(message["data"])))
                self._arrived.set()

    async def first(self, kind: str, timeout_s: float = 15.0) -> tuple[float, dict[str, Any]]:
        async with asyncio.timeout(timeout_s):
            while True:
                for at, event in self.seen:
                    if event["type"] == kind:
                        return at, event
                self._arrived.clear()
                await self._arrived.wait()


async def start_call(kamailio: Kamailio, voice: Path, caller: str) -> tuple[float, Any, Earpiece]:
    """A resident calls the hotline (sipp: presses 1 in the greeting, talks 6 s, hangs up);
    returns the moment sipp was started (it sends the INVITE at once), sipp and its earpiece."""
    ear = Earpiece()
    started = time.monotonic()
    sipp = await run_sipp("resident_talks_to_doctor.xml", kamailio.port, service="hotline",
                          caller=caller, timeout_s=40,
                          keys={"rtp_port": str(ear.port), "voice_pcap": str(voice)})
    return started, sipp, ear


async def finish_call(hotline: Hotline, kamailio: Kamailio, sipp: Any, ear: Earpiece) -> None:
    try:
        code, out = await sipp_result(sipp, timeout_s=45)
        assert code == 0, out + kamailio.log_text()[-2000:]
        await calls_done(hotline)
    finally:
        ear.close()


async def record_of(pool: asyncpg.Pool, call_id: str) -> asyncpg.Record:
    return await pool.fetchrow("SELECT * FROM call_records WHERE call_id = $1", call_id)


# Installed in a page: the wall-clock instant (ms) each thing first appeared in it, so what the
# test measures is when the page showed it, not when the test got round to looking.
WATCH_PAGE = """() => {
  window.firstSeen = {};
  const note = (key) => { if (!(key in window.firstSeen)) window.firstSeen[key] = Date.now(); };
  const look = () => {
    for (const row of document.querySelectorAll('#live-calls tr[data-call]')) {
      note('row'); note('row:' + row.dataset.state);
    }
    if (document.querySelector('#screen-pop #caller-card')) note('card');
  };
  new MutationObserver(look).observe(document.body, { subtree: true, childList: true, attributes: true });
  look();
}"""


async def first_seen(page: Page) -> dict[str, float]:
    """What WATCH_PAGE noted, in seconds of the wall clock (time.time())."""
    return {k: v / 1000 for k, v in (await page.evaluate("window.firstSeen")).items()}


@dataclass
class LiveCall:
    record_id: int
    call_id: str
    invite_to_row_s: float
    ring_to_card_s: float
    events: dict[str, float]  # event type → seconds after the INVITE it was published
    shown: dict[str, float]   # what the board showed → seconds after the INVITE
    board_states: list[str]
    card_text: str
    card_while_talking: str
    row_text_ringing: str


def wall(monotonic_at: float) -> float:
    """A time.monotonic() instant on the wall clock (the browser's Date.now())."""
    return time.time() - (time.monotonic() - monotonic_at)


@pytest.fixture(scope="module")
async def live_call(browser: Browser, console: Site, hotline: Hotline, kamailio: Kamailio,
                    doctor_phone: Softphone, voice: Path) -> AsyncIterator[LiveCall]:
    """张桂兰 calls by day and talks with her doctor, watched by the district admin on /board and
    by the doctor on her desk: what each saw, and when."""
    watchers = Pages(browser, console)
    try:
        board = await watchers.new(console.logins["district_admin"], "/board")
        await board_live(board)
        doctor = await watchers.new(console.logins["family_doctor"], "/desk")
        await listening(doctor)
        await board.evaluate(WATCH_PAGE)
        await doctor.evaluate(WATCH_PAGE)
        rings_before, answers_before = doctor_phone.incoming_calls, doctor_phone.answered_calls
        row = board.locator("#live-calls tr[data-call]")
        card = doctor.locator("#screen-pop #caller-card")
        async with Events(console.site.app[CONSOLE].redis_url) as events:
            invited, sipp, ear = await start_call(kamailio, voice, ZHANG_GUILAN)
            try:
                await row.first.wait_for(state="attached", timeout=10_000)
                await card.wait_for(state="visible", timeout=15_000)
                ring = await doctor_phone.wait_event("CALL_INCOMING", count=rings_before + 1)
                ringing_state = board.locator("#live-calls tr[data-state=ringing]")
                await expect(ringing_state).to_have_count(1)
                row_text_ringing = await ringing_state.inner_text()
                card_text = await card.inner_text()
                await screenshot(doctor, "screen-pop")
                await expect(board.locator("#live-calls tr[data-state=talking]")).to_have_count(1)
                await expect(board.locator("#call-count")).to_have_text("1")
                await screenshot(board, "board-live-call")
                # the card stays while she talks
                await doctor_phone.wait_event("CALL_ESTABLISHED", direction="incoming",
                                              count=answers_before + 1)
                await expect(card).to_be_visible()
                card_while_talking = await card.inner_text()
            finally:
                await finish_call(hotline, kamailio, sipp, ear)
            await expect(row).to_have_count(0)  # gone when it ends
            await expect(board.locator("#call-count")).to_have_text("0")
            _, offered = await events.first("offered")
            await events.first("ended")
            mine = [(at, e) for at, e in events.seen if e.get("call_id") == offered["call_id"]]
        record = await record_of(console.pool, offered["call_id"])
        assert record is not None and record["disposition"] == "connected", dict(record or {})
        assert watchers.problems == [], watchers.problems
        on_board, on_desk = await first_seen(board), await first_seen(doctor)
        since = wall(invited)
        yield LiveCall(record["id"], offered["call_id"], invite_to_row_s=on_board["row"] - since,
                       ring_to_card_s=on_desk["card"] - wall(ring["at"]),
                       events={e["type"]: round(wall(at) - since, 3) for at, e in reversed(mine)},
                       shown={k: round(v - since, 3) for k, v in on_board.items()},
                       board_states=[e["type"] for _, e in mine], card_text=card_text,
                       card_while_talking=card_while_talking, row_text_ringing=row_text_ringing)
    finally:
        await watchers.close()


# --- the tests -----------------------------------------------------------------------------------

async def test_the_board_shows_a_call_within_1_s_of_its_invite_then_its_states_then_drops_it(
        live_call: LiveCall, console: Site) -> None:
    print(f"board: INVITE → row {live_call.invite_to_row_s * 1000:.0f} ms; events published "
          f"(s after the INVITE): {live_call.events}; the board showed: {live_call.shown}")
    assert live_call.invite_to_row_s <= WITHIN_S, live_call
    # the row followed the call: ringing (the doctor named), talking, gone (the fixture waited
    # for each on the page; here what the feed carried)
    assert "振铃中" in live_call.row_text_ringing and "138****0001" in live_call.row_text_ringing
    doctor = console.names[console.logins["family_doctor"].staff_id]
    assert doctor in live_call.row_text_ringing, live_call.row_text_ringing
    assert "13800000001" not in live_call.row_text_ringing
    # how long it has rung / lasted, on the server's clock (the service's runs days behind this
    # machine's here, as a ward PC's clock may be off): seconds, not days
    durations = re.findall(r"\d+:\d\d:\d\d", live_call.row_text_ringing)
    assert len(durations) == 2 and all(d.startswith("0:00:0") for d in durations), durations
    assert live_call.board_states[0] == "offered" and live_call.board_states[-1] == "ended"
    assert {"ringing", "answered"} <= set(live_call.board_states)


async def test_the_ringing_doctor_sees_the_callers_card_within_1_s(live_call: LiveCall) -> None:
    print(f"screen-pop: ring → card {live_call.ring_to_card_s * 1000:.0f} ms")
    assert live_call.ring_to_card_s <= WITHIN_S, live_call
    text = live_call.card_text
    assert "张桂兰" in text and "138****0001" in text, text
    assert MASKED_ID.search(text), text
    assert "未登记号码" not in text
    assert "13800000001" not in text and not re.search(r"\d{17}[\dX]", text), text
    assert "张桂兰" in live_call.card_while_talking


PLAYS_ON = """() => new Promise((resolve) => {
  const player = document.getElementById('player');
  const check = () => { if (player.currentTime > 0.2) resolve(player.currentTime); };
  player.addEventListener('timeupdate', check);
  check();
})"""


async def test_playing_the_recording_checks_its_checksum_and_is_audited(
        live_call: LiveCall, console: Site, pages: Pages) -> None:
    doctor = console.logins["family_doctor"]
    page = await pages.new(doctor, f"/calls/{live_call.record_id}")
    await expect(page.locator("#disposition")).to_have_text("已接通")
    player = page.locator("#player")
    await expect(player).to_have_attribute("src", f"/api/v1/calls/{live_call.record_id}/recording")
    await page.locator("h1").click()  # a user's gesture: Chromium lets a page play audio after one
    started = await page.evaluate(
        "document.getElementById('player').play().then(() => 'playing', e => e.name)")
    assert started == "playing", started
    await expect(page.locator("#checksum-result")).to_have_text("校验通过")
    await expect(page.locator("#checksum-result")).to_have_attribute("data-ok", "true")
    # it really plays: the audio element's clock moves (the stream came through, Range and all)
    played_s = await asyncio.wait_for(page.evaluate(PLAYS_ON), TIMEOUT_MS / 1000)
    assert played_s > 0.2
    # the stored checksum is the file's
    sha = await console.pool.fetchval("SELECT recording_sha256 FROM call_records WHERE id = $1",
                                      live_call.record_id)
    await expect(page.locator("#sha256")).to_have_text(sha)
    await screenshot(page, "call-detail")
    played = await console.pool.fetch(
        "SELECT actor FROM audit_log WHERE action = 'recording.played' AND subject = $1",
        f"recording:{live_call.record_id}")
    assert played and all(doctor.staff_no in r["actor"] for r in played), played


async def test_the_director_exports_the_calls_as_csv_and_opens_it(
        live_call: LiveCall, console: Site, pages: Pages, tmp_path: Path) -> None:
    director = console.logins["director"]
    page = await pages.new(director, "/calls")
    await expect(page.locator(f"tr[data-call='{live_call.record_id}']")).to_be_visible()
    await screenshot(page, "calls")
    await page.fill("#call-export input[name=reason]", "质控抽查 e2e")
    async with page.expect_download() as downloading:
        await page.click("#call-export button[type=submit]")
    download = await downloading.value
    assert re.fullmatch(r"calls-\d{8}-\d{4}\.csv", download.suggested_filename), download.suggested_filename
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    raw = saved.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), raw[:20]
    text = raw.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    assert body and all(len(r) == len(header) for r in body), rows[:3]
    assert any("138****0001" in cell for r in body for cell in r), body
    assert "13800000001" not in text and not re.search(r"1[3-9]\d{9}", text), text[:500]
    exported = await console.pool.fetch(
        "SELECT actor, reason FROM audit_log WHERE action = 'calls.exported'")
    assert [r for r in exported if director.staff_no in r["actor"] and "质控抽查 e2e" in r["reason"]
            and f"[{len(body)} rows" in r["reason"]], exported


async def test_an_unknown_number_pops_as_unknown_on_the_desk_agents_console(
        console: Site, hotline: Hotline, kamailio: Kamailio, voice: Path, pages: Pages,
        tmp_path: Path) -> None:
    """An unknown caller goes to the district duty desk; the desk agent's card says the number
    is not on record (and names nobody)."""
    desk = await console.pool.fetchrow(
        """SELECT staff_no, sip_uri FROM staff WHERE role = 'agent' AND center_id IS NULL
           ORDER BY staff_no LIMIT 1""")
    agent = await console.login_for(desk["staff_no"])
    ext = desk["sip_uri"].removeprefix("sip:").split("@")[0]
    async with Softphone(ext, kamailio.port, tmp_path / f"phone-{ext}", answer_after=1.0) as phone:
        page = await pages.new(agent, "/calls")
        await listening(page)
        _, sipp, ear = await start_call(kamailio, voice, UNKNOWN_NUMBER)
        try:
            ring = await phone.wait_event("CALL_INCOMING", timeout_s=15)
            await page.locator("#screen-pop #unknown-caller").wait_for(state="visible", timeout=5000)
            popped = time.monotonic() - ring["at"]
            card = await page.locator("#caller-card").inner_text()
            await screenshot(page, "screen-pop-unknown")
        finally:
            await finish_call(hotline, kamailio, sipp, ear)
    print(f"screen-pop (unknown): ring → card {popped * 1000:.0f} ms")
    assert popped <= WITHIN_S
    assert "139****0077" in card and UNKNOWN_NUMBER not in card, card
    assert "张桂兰" not in card and not MASKED_ID.search(card), card


async def test_do_not_disturb_on_the_desk_makes_the_next_call_skip_the_doctor(
        live_call: LiveCall, console: Site, hotline: Hotline, kamailio: Kamailio,
        doctor_phone: Softphone, voice: Path, pages: Pages, tmp_path: Path) -> None:
    doctor = console.logins["family_doctor"]
    assistant = console.logins["assistant"]
    board = await pages.new(console.logins["district_admin"], "/board")
    await board_live(board)
    badge = board.locator(f"#presence [data-staff='{doctor.staff_id}']")
    await expect(badge).not_to_have_class(re.compile("presence-dnd"))
    page = await pages.new(doctor, "/desk")
    await page.get_by_role("button", name="勿扰").click()
    await expect(page.locator("#presence-label")).to_have_attribute("data-state", "dnd")
    # the admin's board is told by the presence change itself (its own snapshot is 60 s apart)
    await expect(badge).to_have_class(re.compile("presence-dnd"))
    await expect(badge).to_contain_text("勿扰")
    await expect(page.get_by_role("button", name="勿扰")).to_have_attribute("aria-pressed", "true")
    await screenshot(page, "desk")
    rings_before = doctor_phone.incoming_calls
    try:
        async with Softphone("2001", kamailio.port, tmp_path / "phone-2001", answer_after=0.5) as phone:
            async with Events(console.site.app[CONSOLE].redis_url) as events:
                _, sipp, ear = await start_call(kamailio, voice, ZHANG_GUILAN)
                try:
                    _, offered = await events.first("offered")
                    await phone.wait_event("CALL_ESTABLISHED", direction="incoming", timeout_s=20)
                finally:
                    await finish_call(hotline, kamailio, sipp, ear)
    finally:
        await console.presence.set_state(doctor.staff_id, Kind.AVAILABLE)
    assert doctor_phone.incoming_calls == rings_before, "the doctor's phone rang while 勿扰"
    record = await record_of(console.pool, offered["call_id"])
    assert record["disposition"] == "connected" and record["answered_by"] == assistant.staff_id
    rung = await console.pool.fetch("SELECT staff_id, outcome FROM dial_attempts WHERE call_record_id = $1"
                                    " ORDER BY seq", record["id"])
    assert [(r["staff_id"], r["outcome"]) for r in rung] == [(assistant.staff_id, "answered")], rung
    steps = json.loads(record["route_explanation"])["steps"]
    own = next(s for s in steps if s["step"] == "own_doctor")
    assert own["targets"] == [] and [k["staff_id"] for k in own["skipped"]] == [doctor.staff_id], own
    assert "do not disturb" in own["skipped"][0]["reason"], own
    # the call's page says so: the doctor skipped with the reason, the assistant rung
    detail = await pages.new(console.logins["district_admin"], f"/calls/{record['id']}")
    skipped = detail.locator(f"tr[data-step=own_doctor] [data-skipped='{doctor.staff_id}']")
    await expect(skipped).to_contain_text("勿扰")  # the console renders the reason in Chinese
    attempts = detail.locator("#attempts tbody tr")
    await expect(attempts).to_have_count(1)
    await expect(attempts).to_contain_text(console.names[assistant.staff_id])
    await screenshot(detail, "call-detail-dnd")


@pytest.mark.parametrize("role", ROLES)
async def test_each_role_sees_exactly_the_navigation_its_capabilities_allow(
        role: str, console: Site, pages: Pages) -> None:
    page = await pages.new(console.logins[role])
    await expect(page.locator("header.top nav a")).to_have_text(NAVIGATION[role])
    # a page out of the navigation is refused, not merely unlinked
    for path, title in (("/board", "实时监控"), ("/reports", "报表"), ("/audit", "审计"),
                        ("/admin/staff", "管理"), ("/handover", "交班"), ("/referrals", "转诊"),
                        ("/promises", "履约")):
        if title not in NAVIGATION[role]:
            answer = await page.goto(path)
            assert answer is not None and answer.status == 403, (role, path, answer and answer.status)
    # the screen-pop listens on the pages of those who answer calls, only
    await page.goto("/calls")
    pops = await page.locator("body").get_attribute("data-screen-pop")
    assert (pops == "1") == (role in ANSWERS_CALLS), (role, pops)


async def test_the_board_says_when_its_feed_is_stale_and_recovers(
        console: Site, pages: Pages) -> None:
    """Pings keep the board fresh; 12 s without any event shows the stale banner (the page's
    clock is moved on, the feed itself is real), and the next ping takes it away."""
    page = await pages.new(console.logins["supervisor"])
    await page.clock.install()
    await page.goto("/board")
    await board_live(page)
    await expect(page.locator("#stale")).to_be_hidden()
    await page.clock.fast_forward("00:13")
    await expect(page.locator("#stale")).to_be_visible(timeout=3000)
    await expect(page.locator("#feed-status")).to_have_attribute("data-state", "stale")
    await screenshot(page, "board-stale")
    await expect(page.locator("#stale")).to_be_hidden(timeout=10_000)  # a ping within 5 s
    await board_live(page)


SCREENS: tuple[tuple[str, str, str], ...] = (
    ("desk-doctor", "family_doctor", "/desk"),
    ("referrals", "family_doctor", "/referrals"),
    ("board", "district_admin", "/board"),
    ("calls-admin", "district_admin", "/calls"),
    ("reports", "director", "/reports"),
    ("promises", "director", "/promises"),
    ("audit", "supervisor", "/audit"),
    ("admin-staff", "district_admin", "/admin/staff"),
    ("admin-residents", "district_admin", "/admin/residents"),
    ("admin-roster", "district_admin", "/admin/roster"),
    ("admin-lines", "district_admin", "/admin/lines"),
    ("admin-prompts", "district_admin", "/admin/prompts"),
    ("admin-calendar", "district_admin", "/admin/calendar"),
)


async def test_every_page_opens_for_its_people_and_is_photographed(
        live_call: LiveCall, console: Site, pages: Pages) -> None:
    """Each page as the person it is for, after a real call (screenshots for the README with
    HOTLINE_SCREENSHOTS=1): it answers 200, shows its heading, and nothing on it fails."""
    opened: dict[str, Page] = {}
    login_page = await pages.new(path="/login")
    await screenshot(login_page, "login")
    for name, role, path in SCREENS:
        if role not in opened:
            opened[role] = await pages.new(console.logins[role])
        page = opened[role]
        answer = await page.goto(path)
        assert answer is not None and answer.status == 200, (name, answer and answer.status)
        await expect(page.locator("h1")).to_be_visible()
        if path == "/board":
            await board_live(page)
        await screenshot(page, name)

