"""管理 (web/plugins/admin): the district administrator's pages and API, over a real PostgreSQL
and Redis — each change works and is audited, other roles are refused, bad input changes nothing.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import jsonschema
import pytest
from aiohttp.test_utils import TestServer
from argon2 import PasswordHasher

from ivr.prompts import PROMPT_DIR
from routing.presence import Presence
from routing.records import NewStaff, write_staff
from store.pii import PiiVault
from tests.district import District, build_district
from web.accounts import Accounts
from web.app import Console, create_app
from web.plugins.admin.http import MAX_PROMPT_UPLOAD, PLUGIN
from web.sessions import SessionStore

SH = ZoneInfo("Asia/Shanghai")
WEEK = date(2026, 11, 16)  # a Monday; the test district's night shifts run from here for 7 nights
NOW = datetime(2026, 11, 16, 10, 0, tzinfo=SH)
NASTY = "<script>alert(1)</script>' OR 1=1; DROP TABLE staff; --"


class RecordingAccounts(Accounts):
    """The real accounts (argon2 at its cheapest), remembering the one-time codes they issued so
    a test can compare them with what the page showed and sign in with them."""

    def __init__(self, pool: asyncpg.Pool, redis: Any):
        super().__init__(pool, redis, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        self.codes: dict[int, str] = {}

    async def issue_one_time_code(self, staff_id: int, **kwargs: Any) -> str:  # type: ignore[override]
        code = await super().issue_one_time_code(staff_id, **kwargs)
        self.codes[staff_id] = code
        return code


@dataclass
class Site:
    base: str
    http: aiohttp.ClientSession
    sessions: SessionStore
    accounts: RecordingAccounts
    pool: asyncpg.Pool
    district: District
    admin_id: int
    others: dict[str, int] = field(default_factory=dict)  # role → a staff id of that role
    csrf: str = ""

    async def sign_in(self, staff_id: int) -> None:
        token, session = await self.sessions.create(staff_id)
        self.http.cookie_jar.clear()
        self.http.cookie_jar.update_cookies({"jy_session": token}, aiohttp.client.URL(self.base))
        self.csrf = session.csrf

    def headers(self, **extra: str) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf, "Origin": self.base.rstrip("/"), **extra}

    async def call(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
        async with self.http.request(method, self.base.rstrip("/") + path, json=json_body, data=data,
                                     headers=headers if headers is not None else self.headers(),
                                     allow_redirects=False) as r:
            text = await r.text() if r.content_type != "audio/wav" else ""
            body = json.loads(text) if r.content_type == "application/json" else (
                await r.read() if r.content_type == "audio/wav" else text)
            return r.status, body, r.content_type

    async def audits(self, action: str) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(
            "SELECT actor, action, subject, reason FROM audit_log WHERE action = $1 ORDER BY id", action))


@pytest.fixture
async def site(pool: asyncpg.Pool, redis: Any, vault: PiiVault) -> AsyncIterator[Site]:
    district = await build_district(pool, vault, week_of=WEEK)
    async with pool.acquire() as conn:
        admin, supervisor, director = await write_staff(conn, vault, [
            NewStaff("ADM1", "周管理", "district_admin", district.district_id),
            NewStaff("SUP1", "吴质控", "supervisor", district.district_id),
            NewStaff("DIR1", "郑主任", "director", district.district_id, district.center_id),
        ])
    sessions = SessionStore(redis)
    accounts = RecordingAccounts(pool, redis)
    ctx = Console(pool=pool, redis=redis, vault=vault, tz=SH, now=lambda: NOW, sessions=sessions,
                  accounts=accounts, presence=Presence(redis, tz=SH, now=lambda: NOW))
    server = TestServer(create_app(ctx), host="127.0.0.1", port=0)
    await server.start_server()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        s = Site(str(server.make_url("/")), http, sessions, accounts, pool, district, admin,
                 {"supervisor": supervisor, "director": director, "family_doctor": district.doctor_id,
                  "assistant": district.assistant_id, "night_doctor": district.night_id,
                  "agent": district.agent_id})
        await s.sign_in(admin)
        yield s
    await server.close()


def schema_of(method: str, path: str) -> dict[str, Any]:
    for route in PLUGIN.routes:
        if route.api and route.method == method and route.path == path:
            assert route.response is not None
            return route.response
    raise AssertionError(f"no route {method} {path}")


def valid(method: str, path: str, body: Any) -> Any:
    jsonschema.validate(body, schema_of(method, path))
    return body


async def staff_row(pool: asyncpg.Pool, staff_no: str) -> dict[str, Any]:
    return dict(await pool.fetchrow("SELECT role, sip_uri, team_id, center_id FROM staff WHERE staff_no = $1",
                                    staff_no))


# -- staff ---------------------------------------------------------------------------------------

async def test_staff_list_edit_and_reset_are_audited(site: Site) -> None:
    status, body, _ = await site.call("GET", "/api/v1/admin/staff")
    assert status == 200
    valid("GET", "/api/v1/admin/staff", body)
    by_no = {s["staff_no"]: s for s in body["staff"]}
    assert by_no["D001"]["name"] == "王医生" and by_no["D001"]["sip_uri"] == "sip:1001@127.0.0.1"
    assert by_no["D002"]["left_on"] is not None
    status, body, _ = await site.call("GET", "/api/v1/admin/staff?q=王")
    assert [s["staff_no"] for s in body["staff"]] == ["D001"]

    status, body, _ = await site.call("PATCH", "/api/v1/admin/staff/N001", json_body={
        "role": "family_doctor", "sip_uri": "sip:3009@127.0.0.1", "team_id": site.district.team_id})
    assert status == 200, body
    valid("PATCH", "/api/v1/admin/staff/{staff_no}", body)
    assert await staff_row(site.pool, "N001") == {
        "role": "family_doctor", "sip_uri": "sip:3009@127.0.0.1", "team_id": site.district.team_id,
        "center_id": site.district.center_id}
    [audit] = await site.audits("admin.staff_updated")
    assert (audit["actor"], audit["subject"]) == ("staff:ADM1", "staff:N001")
    assert "sip:3009@127.0.0.1" in audit["reason"]

    # the HTML form does the same
    status, _, _ = await site.call("POST", "/admin/staff/N001", data={
        "csrf_token": site.csrf, "role": "night_doctor", "sip_uri": "", "team_id": ""},
        headers={"Origin": site.base.rstrip("/")})
    assert status == 303
    assert await staff_row(site.pool, "N001") == {"role": "night_doctor", "sip_uri": None, "team_id": None,
                                                  "center_id": site.district.center_id}
    assert len(await site.audits("admin.staff_updated")) == 2
    status, html, _ = await site.call("GET", "/admin/staff")
    assert status == 200 and "赵医生" in html and "重置密码" in html

    # reset password: a one-time code shown once, the person's sessions end
    token, _ = await site.sessions.create(site.district.doctor_id)
    status, body, _ = await site.call("POST", "/api/v1/admin/staff/D001/one-time-code")
    assert status == 200
    valid("POST", "/api/v1/admin/staff/{staff_no}/one-time-code", body)
    code = site.accounts.codes[site.district.doctor_id]
    assert body == {"staff_no": "D001", "one_time_code": code}
    # the code shown is the one that signs in, and only to set a new password
    signed = await site.accounts.sign_in("D001", code, "127.0.0.9", datetime.now(SH))
    assert signed.status == "must_change"
    assert await site.sessions.load(token) is None
    [audit] = await site.audits("admin.password_reset")
    assert (audit["actor"], audit["subject"]) == ("staff:ADM1", "staff:D001")
    assert body["one_time_code"] not in audit["reason"]
    status, html, _ = await site.call("POST", "/admin/staff/A001/password", data={"csrf_token": site.csrf},
                                      headers={"Origin": site.base.rstrip("/")})
    assert status == 200 and site.accounts.codes[site.district.assistant_id] in html


async def test_staff_bad_input_changes_nothing(site: Site) -> None:
    before = await staff_row(site.pool, "D001")
    for body, status in [
        ({"role": "emperor"}, 422),
        ({"sip_uri": NASTY}, 422),
        ({"sip_uri": "sip:2001@127.0.0.1"}, 409),            # 李助理's extension
        ({"team_id": 999999}, 422),
        ({"name": "x"}, 422),
        ([1, 2], 400),
    ]:
        got, answer, _ = await site.call("PATCH", "/api/v1/admin/staff/D001", json_body=body)
        assert got == status, (body, answer)
        assert answer["message"] and "Traceback" not in answer["message"]
    got, answer, _ = await site.call("PATCH", "/api/v1/admin/staff/NOBODY", json_body={"role": "nurse"})
    # a 404 says there is no such staff member without echoing the 工号 asked for (issue 10)
    assert got == 404 and answer["error"] == "no_such_staff" and "NOBODY" not in answer["message"]
    got, _, _ = await site.call("PATCH", "/api/v1/admin/staff/..%2F..%2Fetc", json_body={"role": "nurse"})
    assert got == 404
    got, _, _ = await site.call("POST", "/api/v1/admin/staff/NOBODY/one-time-code")
    assert got == 404 and site.accounts.codes == {}
    got, answer, _ = await site.call("POST", "/api/v1/admin/staff/D002/one-time-code")  # has left
    assert got == 422 and site.accounts.codes == {}
    got, answer, _ = await site.call("POST", "/api/v1/admin/staff/ADM1/one-time-code")  # herself
    assert got == 422 and site.accounts.codes == {}
    assert await staff_row(site.pool, "D001") == before
    assert await site.audits("admin.staff_updated") == []
    assert await site.audits("admin.password_reset") == []
    # without the CSRF token nothing changes either
    got, _, _ = await site.call("PATCH", "/api/v1/admin/staff/D001", json_body={"role": "nurse"},
                                headers={"Origin": site.base.rstrip("/")})
    assert got == 403 and await staff_row(site.pool, "D001") == before


# -- residents -----------------------------------------------------------------------------------

async def test_residents_search_is_masked_scoped_and_audited(site: Site, vault: PiiVault) -> None:
    # a resident of another district with the same surname: never found
    async with site.pool.acquire() as conn:
        other = await conn.fetchval("INSERT INTO districts (name) VALUES ('别区') RETURNING id")
        center = await conn.fetchval("INSERT INTO centers (district_id, name) VALUES ($1, '别街') RETURNING id", other)
        await conn.execute(
            "INSERT INTO residents (name, id_number_enc, id_number_hash, id_number_masked, sex, center_id)"
            " VALUES ('张别人', '\\x00', '\\x01', '1201**********0000', 'F', $1)", center)
    status, body, _ = await site.call("GET", "/api/v1/admin/residents?q=张")
    assert status == 200
    valid("GET", "/api/v1/admin/residents", body)
    assert [r["name"] for r in body["residents"]] == ["张桂兰"]
    assert body["residents"][0]["phones"][0] == "138****0001"
    status, body, _ = await site.call("GET", "/api/v1/admin/residents?q=138 0000 0001")
    assert [r["id"] for r in body["residents"]] == [site.district.resident_id]
    status, html, _ = await site.call("GET", "/admin/residents?q=13800000002")
    assert status == 200 and "刘建国" in html and "13800000002" not in html.replace('value="13800000002"', "")
    audits = await site.audits("resident.search")
    assert len(audits) == 3 and {a["actor"] for a in audits} == {"staff:ADM1"}
    assert all("13800000001" not in a["reason"] for a in audits)
    status, body, _ = await site.call("GET", "/api/v1/admin/residents?q=" + "%25' OR 1=1 --")
    assert status == 200 and body["residents"] == []


# -- roster --------------------------------------------------------------------------------------

async def test_roster_month_swap_and_gap_check(site: Site) -> None:
    status, body, _ = await site.call("GET", "/api/v1/admin/roster?month=2026-11")
    assert status == 200
    valid("GET", "/api/v1/admin/roster", body)
    assert len(body["shifts"]) == 7 and {s["staff_no"] for s in body["shifts"]} == {"N001"}
    # the test district has nights only in the week of the 16th: the other nights are gaps
    assert body["gaps"] and all(g["center"] == "测试街" for g in body["gaps"])
    first = body["shifts"][0]

    status, answer, _ = await site.call("PUT", f"/api/v1/admin/roster/shifts/{first['id']}/doctor",
                                        json_body={"staff_no": "D001"})
    assert status == 200, answer
    row = await site.pool.fetchrow("SELECT doctor_id, swapped_from FROM duty_shifts WHERE id = $1", first["id"])
    assert (row["doctor_id"], row["swapped_from"]) == (site.district.doctor_id, site.district.night_id)
    [audit] = await site.audits("admin.shift_swapped")
    assert audit["subject"] == f"shift:{first['id']}" and audit["reason"] == "staff:N001 -> staff:D001"

    status, html, _ = await site.call("GET", "/admin/roster?month=2026-11")
    assert status == 200 and "排班缺口检查" in html and "换班，原 赵医生" in html


async def test_roster_bad_input_changes_nothing(site: Site) -> None:
    _, body, _ = await site.call("GET", "/api/v1/admin/roster?month=2026-11")
    second = body["shifts"][1]
    # 王医生 is already on a district backup shift overlapping the second night
    starts = datetime.combine(WEEK + timedelta(days=1), time(20), SH)
    await site.pool.execute(
        "INSERT INTO duty_shifts (doctor_id, district_id, center_id, starts_at, ends_at, kind)"
        " VALUES ($1, $2, NULL, $3, $4, 'backup')", site.district.doctor_id, site.district.district_id,
        starts, starts + timedelta(hours=4))
    before = await site.pool.fetch("SELECT id, doctor_id, swapped_from FROM duty_shifts ORDER BY id")
    cases = [
        (f"/api/v1/admin/roster/shifts/{second['id']}/doctor", {"staff_no": "D001"}, 409),
        (f"/api/v1/admin/roster/shifts/{second['id']}/doctor", {"staff_no": "G001"}, 422),  # an agent
        (f"/api/v1/admin/roster/shifts/{second['id']}/doctor", {"staff_no": "D002"}, 422),  # has left
        (f"/api/v1/admin/roster/shifts/{second['id']}/doctor", {"staff_no": "NOBODY"}, 404),
        (f"/api/v1/admin/roster/shifts/{second['id']}/doctor", {"staff_no": "x' OR 1=1"}, 404),
        (f"/api/v1/admin/roster/shifts/{second['id']}/doctor", {"staff_no": NASTY}, 422),  # too long for a 工号
        (f"/api/v1/admin/roster/shifts/{second['id']}/doctor", {}, 422),
        ("/api/v1/admin/roster/shifts/999999/doctor", {"staff_no": "D001"}, 404),
        ("/api/v1/admin/roster/shifts/..%2F1/doctor", {"staff_no": "D001"}, 404),
    ]
    for path, payload, expected in cases:
        status, answer, _ = await site.call("PUT", path, json_body=payload)
        assert status == expected, (path, payload, answer)
    assert await site.pool.fetch("SELECT id, doctor_id, swapped_from FROM duty_shifts ORDER BY id") == before
    assert await site.audits("admin.shift_swapped") == []
    for month in ("2026-13", "26-11", "2026-1", "<b>"):
        status, answer, _ = await site.call("GET", f"/api/v1/admin/roster?month={month}")
        assert status == 422 and answer["error"] == "bad_month"


# -- hotline lines -------------------------------------------------------------------------------

async def test_lines_add_list_remove(site: Site) -> None:
    status, body, _ = await site.call("POST", "/api/v1/admin/lines", json_body={
        "number": "96196", "center_id": site.district.center_id, "label": NASTY})
    assert status == 200, body
    valid("POST", "/api/v1/admin/lines", body)
    [line] = body["lines"]
    assert (line["number"], line["center"], line["label"]) == ("96196", "测试街", NASTY)
    status, html, _ = await site.call("GET", "/admin/lines")
    assert NASTY not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    [audit] = await site.audits("admin.line_added")
    assert audit["subject"] == "line:96196"

    for payload, expected in [({"number": "96196"}, 422),               # already a line
                              ({"number": "a/b"}, 422), ({"number": NASTY}, 422),
                              ({"number": "96197", "center_id": 999999}, 422), ({}, 422)]:
        status, answer, _ = await site.call("POST", "/api/v1/admin/lines", json_body=payload)
        assert status == expected, (payload, answer)
    assert await site.pool.fetchval("SELECT count(*) FROM hotline_lines") == 1

    status, answer, _ = await site.call("DELETE", "/api/v1/admin/lines/96199")
    assert status == 404
    status, body, _ = await site.call("DELETE", "/api/v1/admin/lines/96196")
    assert status == 200 and body["lines"] == []
    assert [a["subject"] for a in await site.audits("admin.line_removed")] == ["line:96196"]

    status, _, _ = await site.call("POST", "/admin/lines", data={"csrf_token": site.csrf, "number": "8001",
                                                                "center_id": "", "label": ""},
                                   headers={"Origin": site.base.rstrip("/")})
    assert status == 303
    assert await site.pool.fetchval("SELECT center_id FROM hotline_lines WHERE number = '8001'") is None


# -- prompts -------------------------------------------------------------------------------------

def tone_wav(seconds: float = 0.5, rate: int = 44100) -> bytes:
    from pydub.generators import Sine

    out = io.BytesIO()
    Sine(440).to_audio_segment(duration=int(seconds * 1000)).set_frame_rate(rate).set_channels(2).export(
        out, format="wav")
    return out.getvalue()


def upload(content: bytes, filename: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", content, filename=filename, content_type="application/octet-stream")
    return form


async def test_prompt_upload_hear_restore(site: Site) -> None:
    status, body, _ = await site.call("GET", "/api/v1/admin/prompts")
    assert status == 200
    valid("GET", "/api/v1/admin/prompts", body)
    assert {p["name"] for p in body["prompts"]} >= {"greeting", "menu"} and not any(p["custom"] for p in body["prompts"])

    status, body, _ = await site.call("PUT", "/api/v1/admin/prompts/greeting", data=upload(tone_wav(), "新问候.wav"))
    assert status == 200, body
    valid("PUT", "/api/v1/admin/prompts/{name}", body)
    assert body["custom"] and body["source_name"] == "新问候.wav" and body["set_by"] == "staff:ADM1"
    status, wav, kind = await site.call("GET", "/api/v1/admin/prompts/greeting/audio")
    assert status == 200 and kind == "audio/wav" and wav[:4] == b"RIFF"
    assert int.from_bytes(wav[22:24], "little") == 1 and int.from_bytes(wav[24:28], "little") == 8000
    assert wav != (PROMPT_DIR / "greeting.wav").read_bytes()
    [audit] = await site.audits("admin.prompt_uploaded")
    assert audit["subject"] == "prompt:greeting" and audit["actor"] == "staff:ADM1"
    status, html, _ = await site.call("GET", "/admin/prompts")
    assert status == 200 and "新问候.wav" in html and "恢复默认" in html

    status, body, _ = await site.call("DELETE", "/api/v1/admin/prompts/greeting")
    assert status == 200 and body["custom"] is False
    _, wav, _ = await site.call("GET", "/api/v1/admin/prompts/greeting/audio")
    assert wav == (PROMPT_DIR / "greeting.wav").read_bytes()
    assert [a["subject"] for a in await site.audits("admin.prompt_restored")] == ["prompt:greeting"]
    status, body, _ = await site.call("DELETE", "/api/v1/admin/prompts/greeting")
    assert status == 404


async def test_prompt_bad_uploads_change_nothing(site: Site) -> None:
    status, body, _ = await site.call("PUT", "/api/v1/admin/prompts/menu",
                                      data=upload(b"this is not audio at all\n" * 50, "menu.wav"))
    assert status == 415 and body["error"] == "not_audio" and "音频" in body["message"]
    status, body, _ = await site.call("PUT", "/api/v1/admin/prompts/menu", json_body={"file": "x"})
    assert status == 415
    for kind, payload in [("multipart/form-data", b"--x\r\n"),                     # no boundary
                          ("multipart/form-data; boundary=XyZ", b"garbage\r\n"),   # no part
                          ("multipart/form-data; boundary=XyZ",
                           b'--XyZ\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--XyZ--\r\n')]:
        status, body, _ = await site.call("PUT", "/api/v1/admin/prompts/menu", data=payload,
                                          headers=site.headers(**{"Content-Type": kind}))
        assert status in (400, 422), (kind, payload, status, body)
    for name in ("..%2F..%2Fetc%2Fpasswd", "greeting.wav", "%2Fetc%2Fpasswd", "nope", "<b>"):
        status, _, _ = await site.call("PUT", f"/api/v1/admin/prompts/{name}", data=upload(tone_wav(), "a.wav"))
        assert status == 404, name
        status, _, _ = await site.call("GET", f"/api/v1/admin/prompts/{name}/audio")
        assert status == 404, name
    status, _, _ = await site.call("PUT", "/api/v1/admin/prompts/menu", data=upload(tone_wav(), "a.wav"),
                                   headers={"Origin": site.base.rstrip("/")})  # no CSRF header
    assert status == 403
    assert await site.pool.fetchval("SELECT count(*) FROM prompt_overrides") == 0
    assert await site.audits("admin.prompt_uploaded") == []


async def raw_upload(site: Site, headers: str, body_chunks: AsyncIterator[bytes]) -> tuple[bytes, int]:
    """Send a request by hand; return the status line and how many body bytes went out before
    the server answered."""
    url = aiohttp.client.URL(site.base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    sent = 0

    async def send() -> None:
        nonlocal sent
        writer.write(headers.encode())
        try:
            async for chunk in body_chunks:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except (ConnectionError, OSError):
            pass  # the server closed the connection: what it had to say is in the answer

    sender = asyncio.create_task(send())
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout=30)
    finally:
        sender.cancel()
        writer.close()
    return status_line, sent


async def test_a_100_mb_upload_is_refused_without_reading_it(site: Site) -> None:
    size = 100 * 1024 * 1024
    cookie = "; ".join(f"{c.key}={c.value}" for c in site.http.cookie_jar)
    host = aiohttp.client.URL(site.base)
    common = (f"Host: {host.host}:{host.port}\r\nOrigin: {site.base.rstrip('/')}\r\nCookie: {cookie}\r\n"
              f"X-CSRF-Token: {site.csrf}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n")
    head = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'

    async def declared() -> AsyncIterator[bytes]:
        yield head
        for _ in range(size // 65536):
            yield b"\0" * 65536

    status, sent = await raw_upload(site, f"PUT /api/v1/admin/prompts/greeting HTTP/1.1\r\n{common}"
                                          f"Content-Length: {size}\r\n\r\n", declared())
    assert status.startswith(b"HTTP/1.1 413"), status
    assert sent < size // 2

    # the same without a declared length (chunked): refused once 20 MB have arrived
    async def chunked() -> AsyncIterator[bytes]:
        yield b"%x\r\n%s\r\n" % (len(head), head)
        for _ in range(size // 65536):
            yield b"10000\r\n" + b"\0" * 65536 + b"\r\n"

    status, sent = await raw_upload(site, f"PUT /api/v1/admin/prompts/greeting HTTP/1.1\r\n{common}"
                                          "Transfer-Encoding: chunked\r\n\r\n", chunked())
    assert status.startswith(b"HTTP/1.1 413"), status
    assert MAX_PROMPT_UPLOAD <= sent < size // 2
    assert await site.pool.fetchval("SELECT count(*) FROM prompt_overrides") == 0


# -- calendar closures ---------------------------------------------------------------------------

async def test_closures_close_list_reopen(site: Site) -> None:
    status, body, _ = await site.call("POST", "/api/v1/admin/closures", json_body={
        "date": "2026-12-03", "center_id": site.district.center_id, "reason": NASTY})
    assert status == 200, body
    valid("POST", "/api/v1/admin/closures", body)
    [closure] = body["closures"]
    assert (closure["date"], closure["place"], closure["reason"], closure["by"]) == (
        "2026-12-03", "测试街", NASTY, "staff:ADM1")
    status, html, _ = await site.call("GET", "/admin/calendar?year=2026")
    assert NASTY not in html and "&lt;script&gt;" in html
    status, body, _ = await site.call("POST", "/admin/calendar/close", data={
        "csrf_token": site.csrf, "date": "2026-12-04", "center_id": "", "reason": "停电"},
        headers={"Origin": site.base.rstrip("/")})
    assert status == 303
    _, body, _ = await site.call("GET", "/api/v1/admin/closures?year=2026")
    valid("GET", "/api/v1/admin/closures", body)
    assert [(c["date"], c["center_id"]) for c in body["closures"]] == [
        ("2026-12-03", site.district.center_id), ("2026-12-04", None)]
    assert [a["subject"] for a in await site.audits("admin.day_closed")] == [
        f"closure:{site.district.center_id}:2026-12-03", "closure:district:2026-12-04"]

    status, body, _ = await site.call("DELETE", f"/api/v1/admin/closures?date=2026-12-03&center_id={site.district.center_id}")
    assert status == 200 and [c["date"] for c in body["closures"]] == ["2026-12-04"]
    assert len(await site.audits("admin.day_reopened")) == 1


async def test_closures_bad_input_changes_nothing(site: Site) -> None:
    for payload, expected in [
        ({"date": "2026-02-30", "reason": "培训"}, 422),
        ({"date": "tomorrow", "reason": "培训"}, 422),
        ({"date": "2026-12-03", "reason": "  "}, 422),
        ({"date": "2026-12-03", "reason": "培训", "center_id": 999999}, 422),
        ({"date": "2026-12-03", "reason": "培训", "center_id": "../1"}, 422),
    ]:
        status, answer, _ = await site.call("POST", "/api/v1/admin/closures", json_body=payload)
        assert status == expected, (payload, answer)
    status, answer, _ = await site.call("DELETE", "/api/v1/admin/closures?date=2026-12-03")
    assert status == 404
    status, answer, _ = await site.call("GET", "/api/v1/admin/closures?year=20026")
    assert status == 422
    assert await site.pool.fetchval("SELECT count(*) FROM calendar_closures") == 0
    assert await site.audits("admin.day_closed") == []


# -- who may ---------------------------------------------------------------------------------------

def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: {"staff_no": "D001", "shift_id": "1", "number": "96196",
                                           "name": "greeting"}[m.group(1)], path)


async def test_every_admin_route_refuses_other_roles(site: Site) -> None:
    before = await staff_row(site.pool, "D001")
    for role, staff_id in site.others.items():
        await site.sign_in(staff_id)
        for route in PLUGIN.routes:
            status, _, _ = await site.call(route.method, concrete(route.path),
                                           json_body={"role": "nurse"} if route.method != "GET" else None)
            assert status == 403, (role, route.method, route.path, status)
    assert await staff_row(site.pool, "D001") == before
    # and nobody signed in: the API says 401, a page sends to the sign-in page
    site.http.cookie_jar.clear()
    status, _, _ = await site.call("GET", "/api/v1/admin/staff")
    assert status == 401
    status, _, _ = await site.call("GET", "/admin/staff")
    assert status == 303


async def test_admin_pages_render(site: Site) -> None:
    for path in ("/admin/staff", "/admin/residents", "/admin/roster", "/admin/lines", "/admin/prompts",
                 "/admin/calendar"):
        status, html, kind = await site.call("GET", path)
        assert status == 200 and kind == "text/html", path
        assert "<script>" not in html.split("</head>")[1]  # no inline script: the CSP forbids it
    status, _, _ = await site.call("GET", "/admin")
    assert status == 303


async def test_a_refused_form_shows_why_on_a_page(site: Site) -> None:
    status, html, kind = await site.call("POST", "/admin/calendar/close", data={
        "csrf_token": site.csrf, "date": "2026-02-30", "center_id": "", "reason": "培训"},
        headers={"Origin": site.base.rstrip("/")})
    assert status == 422 and kind == "text/html" and "日期格式应为 YYYY-MM-DD" in html
    status, html, kind = await site.call("POST", "/admin/roster/shifts/999999", data={
        "csrf_token": site.csrf, "staff_no": "D001", "month": "2026-11"},
        headers={"Origin": site.base.rstrip("/")})
    assert status == 404 and kind == "text/html" and "找不到" in html
    assert await site.pool.fetchval("SELECT count(*) FROM calendar_closures") == 0
