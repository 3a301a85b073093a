"""Working a task in the console (issue 11): its page from 工作台, notes, closing with evidence,
unreachable after the attempts, the supervisor's reassignment (audited), stale versions (409),
the JSON API and its OpenAPI document, and one Chromium run of a doctor closing a callback.

Each test makes a resident of its own in the shared console district (its calls and tasks are
found by nobody else's tests), contracted to the district's family doctor (D001, the shared
family_doctor login).
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta

import asyncpg
import pytest
from playwright.async_api import Page, expect

from handover.callbacks import Callbacks
from handover.tasks import Tasks
from recordings.call_records import CallerNumber, CallRecords
from routing.numbers import parse_id_number
from routing.records import NewResident, write_residents
from tests.browser import screenshot, sign_in
from tests.console import SH, Harness, assert_conforms
from tests.console_rows import insert_call
from tests.district import id_number

_serial = itertools.count(1)


async def new_resident(h: Harness) -> tuple[int, str]:
    """A resident of the shared district's team (doctor D001) and her phone number."""
    n = next(_serial)
    phone = f"1371100{n:04d}"
    d, today = h.district, datetime.now(SH).date()
    async with h.pool.acquire() as conn, conn.transaction():
        written = await write_residents(conn, h.vault, [NewResident(
            f"任务居民{n}", parse_id_number(id_number("19600101", f"{700 + n:03d}")), d.center_id,
            [phone], d.doctor_id, d.team_id, (today - timedelta(days=10), today + timedelta(days=300)))])
    return written.ids[0], phone


async def missed_callback(h: Harness, resident_id: int, phone: str, at: datetime,
                          owner: int | None = None) -> int:
    """A missed call of the resident and the callback task it opens (as the call flow does)."""
    records, caller = CallRecords(h.pool, h.vault), CallerNumber.of(h.vault, phone)
    record = await records.open(f"web-task-{next(_serial)}-{at.timestamp()}", caller, at)
    await records.identified(record, resident_id)
    await records.ended(record, at + timedelta(seconds=30), "missed")
    assert caller.hash is not None and caller.encrypted is not None
    owed = await Callbacks(h.pool).owe_for_missed_call(
        call_record_id=record, resident_id=resident_id, number_hash=caller.hash,
        number_encrypted=caller.encrypted, number_masked=caller.masked,
        owner_staff_id=owner if owner is not None else h.district.doctor_id, missed_at=at)
    return owed.task_id


async def answered(h: Harness, resident_id: int, at: datetime) -> int:
    d = h.district
    return await insert_call(h.pool, offered_at=at, disposition="connected", district_id=d.district_id,
                             center_id=d.center_id, team_id=d.team_id, answered_by=d.doctor_id,
                             wait_s=5, resident_id=resident_id)


async def row(pool: asyncpg.Pool, task_id: int) -> tuple:
    found = await pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
    events = await pool.fetchval("SELECT count(*) FROM task_events WHERE task_id = $1", task_id)
    return tuple(found.values()), events


@pytest.fixture
async def callback(console: Harness) -> tuple[int, int, str]:
    """(task id, resident id, phone): a callback owed to the family doctor, opened an hour ago."""
    resident, phone = await new_resident(console)
    task = await missed_callback(console, resident, phone, datetime.now(SH) - timedelta(hours=1))
    return task, resident, phone


async def test_the_desk_links_to_the_task_page_which_shows_the_task(
        console: Harness, callback: tuple[int, int, str]) -> None:
    task_id, _resident, phone = callback
    doctor = await console.signed_in("family_doctor")
    desk = await doctor.get("/desk")
    assert f'href="/tasks/{task_id}"' in desk.text
    page = await doctor.get(f"/tasks/{task_id}")
    assert page.status == 200
    for words in ("未接来电回拨", "王医生", "待处理", phone[:3] + "****" + phone[-4:], "回拨",
                  f'data-url="/api/v1/tasks/{task_id}/call"', 'name="version" value="1"'):
        assert words in page.text, words
    assert phone not in page.text   # masked only


async def test_a_note_then_done_needs_an_answered_call_and_the_history_says_so(
        console: Harness, callback: tuple[int, int, str]) -> None:
    task_id, resident, _ = callback
    doctor = await console.signed_in("family_doctor")
    doc = await console.openapi()
    noted = await doctor.json("POST", f"/api/v1/tasks/{task_id}/note", {"version": 1, "text": "下午再打"})
    assert_conforms(doc, "POST", "/api/v1/tasks/{task_id}/note", 200, noted)
    assert noted["version"] == 2 and noted["history"][-1]["detail"]["text"] == "下午再打"

    before = await row(console.pool, task_id)
    refused = await doctor.request("POST", f"/api/v1/tasks/{task_id}/close",
                                   json={"version": 2, "status": "done", "note": "已回电"})
    assert refused.status == 422
    assert refused.json() == {"error": "no_evidence",
                              "message": "没有任务开启后与居民接通的通话，不能标记为完成"}
    page = await doctor.form(f"/tasks/{task_id}/close", {"version": "2", "status": "done", "note": "已回电"})
    assert page.status == 422 and "没有任务开启后与居民接通的通话" in page.text and "已回电" in page.text
    assert await row(console.pool, task_id) == before

    call = await answered(console, resident, datetime.now(SH) - timedelta(minutes=10))
    done = await doctor.form(f"/tasks/{task_id}/close", {"version": "2", "status": "done", "note": "已回电，血压平稳"})
    assert (done.status, done.location) == (303, f"/tasks/{task_id}")
    closed = await doctor.get_json(f"/api/v1/tasks/{task_id}")
    assert_conforms(doc, "GET", "/api/v1/tasks/{task_id}", 200, closed)
    assert (closed["status"], closed["evidence_call_id"], closed["close_note"]) == ("done", call, "已回电，血压平稳")
    history = await doctor.get_json(f"/api/v1/tasks/{task_id}/history")
    assert_conforms(doc, "GET", "/api/v1/tasks/{task_id}/history", 200, history)
    assert [(h["event"], h["actor_name"]) for h in history["history"]] == [
        ("opened", None), ("note", "王医生"), ("closed", "王医生")]
    again = await doctor.request("POST", f"/api/v1/tasks/{task_id}/close",
                                 json={"version": 3, "status": "done", "note": "again"})
    assert (again.status, again.json()["error"]) == (409, "closed")


async def test_a_stale_version_is_409_and_two_closing_at_once_one_wins(
        console: Harness, callback: tuple[int, int, str]) -> None:
    task_id, resident, _ = callback
    await answered(console, resident, datetime.now(SH) - timedelta(minutes=5))
    doctor = await console.signed_in("family_doctor")
    assistant = await console.signed_in("assistant")
    stale = await doctor.form(f"/tasks/{task_id}/note", {"version": "7", "text": "旧页面"})
    assert stale.status == 409 and "任务已被他人修改，请刷新后重试" in stale.text
    missing = await doctor.request("POST", f"/api/v1/tasks/{task_id}/note", json={"text": "无版本"})
    assert missing.status == 409
    results = await asyncio.gather(*(
        c.request("POST", f"/api/v1/tasks/{task_id}/close",
                  json={"version": 1, "status": "done", "note": f"by {n}"})
        for n, c in (("doctor", doctor), ("assistant", assistant))))
    assert sorted(r.status for r in results) == [200, 409]
    assert await console.pool.fetchval(
        "SELECT count(*) FROM task_events WHERE task_id = $1 AND event = 'closed'", task_id) == 1


async def test_unreachable_after_the_attempts_and_a_late_close_asks_why(console: Harness) -> None:
    resident, phone = await new_resident(console)
    now = datetime.now(SH)
    task_id = await missed_callback(console, resident, phone, now - timedelta(hours=9))
    doctor = await console.signed_in("family_doctor")
    early = await doctor.request("POST", f"/api/v1/tasks/{task_id}/close",
                                 json={"version": 1, "status": "unreachable", "note": "无人接听"})
    assert (early.status, early.json()["error"]) == (422, "attempts_left")
    tasks = Tasks(console.pool)
    for k in range(3):
        await tasks.record_attempt(task_id, outcome="no_answer", actor_staff_id=console.district.doctor_id,
                                   at=now - timedelta(hours=3 - k))
    page = await doctor.get(f"/tasks/{task_id}")
    assert "超时原因" in page.text and page.text.count("无人接听") >= 3
    late = await doctor.request("POST", f"/api/v1/tasks/{task_id}/close",
                                json={"version": 4, "status": "unreachable", "note": "三次无人接听"})
    assert (late.status, late.json()["error"]) == (422, "late_reason_required")
    closed = await doctor.json("POST", f"/api/v1/tasks/{task_id}/close", {
        "version": 4, "status": "unreachable", "note": "三次无人接听", "late_reason": "夜间无人值守"})
    assert (closed["status"], closed["late_reason"]) == ("unreachable", "夜间无人值守")


async def test_the_supervisor_reassigns_with_a_reason_audited_and_writes_nothing_else(
        console: Harness, callback: tuple[int, int, str]) -> None:
    task_id, _resident, _ = callback
    supervisor = await console.signed_in("supervisor")
    page = await supervisor.get(f"/tasks/{task_id}")
    assert 'id="reassign-form"' in page.text and 'id="close-form"' not in page.text
    note = await supervisor.request("POST", f"/api/v1/tasks/{task_id}/note", json={"version": 1, "text": "x"})
    assert (note.status, note.json()["error"]) == (403, "read_only")
    for body, code in (({"version": 1, "to": "A001", "reason": " "}, "reason_required"),
                       ({"version": 1, "to": "NOPE99", "reason": "请处理"}, "unknown_staff"),
                       ({"version": 1, "to": "D001", "reason": "请处理"}, "same_owner")):
        refused = await supervisor.request("POST", f"/api/v1/tasks/{task_id}/reassign", json=body)
        assert (refused.status, refused.json()["error"]) == (422, code)
    moved = await supervisor.form(f"/tasks/{task_id}/reassign",
                                  {"version": "1", "to": "A001", "reason": "王医生休假，请李助理处理"})
    assert moved.status == 303
    task = await supervisor.get_json(f"/api/v1/tasks/{task_id}")
    last = task["history"][-1]
    assert (task["owner_no"], last["event"], last["owner_from_name"], last["owner_to_name"], last["reason"]) == (
        "A001", "reassigned", "王医生", "李助理", "王医生休假，请李助理处理")
    audited = await console.pool.fetchrow(
        "SELECT actor, action, reason FROM audit_log WHERE subject = $1 ORDER BY id DESC LIMIT 1",
        f"task:{task_id}")
    assert tuple(audited) == ("staff:Q001", "task.reassigned", "王医生休假，请李助理处理")
    doctor = await console.signed_in("family_doctor")
    refused = await doctor.request("POST", f"/api/v1/tasks/{task_id}/reassign",
                                   json={"version": 2, "to": "D001", "reason": "我来"})
    assert refused.status == 403


async def test_the_list_filters_within_scope_and_out_of_scope_is_not_found(
        console: Harness, callback: tuple[int, int, str]) -> None:
    task_id, _resident, _ = callback
    doc = await console.openapi()
    doctor = await console.signed_in("family_doctor")
    listed = await doctor.get_json("/api/v1/tasks?kind=callback&owner=D001")
    assert_conforms(doc, "GET", "/api/v1/tasks", 200, listed)
    assert task_id in {t["id"] for t in listed["tasks"]}
    assert all(t["owner_no"] == "D001" and t["kind"] == "callback" for t in listed["tasks"])
    assert all(t["status"] == "done" for t in (await doctor.get_json("/api/v1/tasks?status=done"))["tasks"])
    assert task_id in {t["id"] for t in (await doctor.get_json("/api/v1/tasks?status=any"))["tasks"]}
    assert task_id not in {t["id"] for t in (await doctor.get_json("/api/v1/tasks?status=done"))["tasks"]}
    assert (await doctor.get_json("/api/v1/tasks?owner=NOPE99"))["tasks"] == []
    for bad in ("kind=gossip", "status=lost"):
        assert (await doctor.get(f"/api/v1/tasks?{bad}")).status == 422
    agent = await console.signed_in("agent")  # the desk sees its own and nobody's tasks, not this
    assert task_id not in {t["id"] for t in (await agent.get_json("/api/v1/tasks"))["tasks"]}
    out, ghost = (await agent.get(f"/api/v1/tasks/{task_id}"), await agent.get("/api/v1/tasks/1999999998"))
    assert (out.status, out.json()) == (ghost.status, ghost.json()) == (404, {"error": "not_found", "message": "没有这个任务"})
    assert str(task_id) not in out.text
    for path in (f"/tasks/{task_id}", f"/api/v1/tasks/{task_id}/history"):
        assert (await agent.get(path)).status == 404
    before = await row(console.pool, task_id)
    assert (await agent.request("POST", f"/api/v1/tasks/{task_id}/note",
                                json={"version": 1, "text": "x"})).status == 404
    assert await row(console.pool, task_id) == before


async def test_bad_input_is_refused_whole(console: Harness, callback: tuple[int, int, str]) -> None:
    task_id, _resident, _ = callback
    doctor = await console.signed_in("family_doctor")
    before = await row(console.pool, task_id)
    for body, status in (({"version": 1, "text": "长" * 5000}, 422), ({"version": 1, "text": "a\x00b"}, 422),
                         ({"version": 1, "text": 12}, 422), ({"version": "two", "text": "x"}, 409),
                         ({"version": 1, "text": ""}, 422)):
        got = await doctor.request("POST", f"/api/v1/tasks/{task_id}/note", json=body)
        assert got.status == status, (body, got.text)
    huge = await doctor.request("POST", f"/api/v1/tasks/{task_id}/note",
                                json={"version": 1, "text": "x" * (1024 * 1024)})
    assert huge.status == 413
    assert (await doctor.request("POST", f"/api/v1/tasks/{task_id}/note", data="[]",
                                 headers={"Content-Type": "application/json"})).status == 422
    assert (await doctor.get("/tasks/abc")).status == 404
    assert await row(console.pool, task_id) == before
    hostile = "<script>alert(1)</script>"
    await doctor.json("POST", f"/api/v1/tasks/{task_id}/note", {"version": 1, "text": hostile})
    page = await doctor.get(f"/tasks/{task_id}")
    assert hostile not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_a_doctor_closes_a_callback_in_chromium(console: Harness, page: Page,
                                                      callback: tuple[int, int, str]) -> None:
    task_id, resident, _ = callback
    await sign_in(page, console.logins["family_doctor"])
    await page.goto("/desk")
    async with page.expect_navigation():
        await page.click(f'a[href="/tasks/{task_id}"]')
    await expect(page.locator("h1")).to_contain_text("未接来电回拨")
    await page.fill("#close-form textarea[name=note]", "已回电")
    async with page.expect_navigation():
        await page.click("#close-form button[type=submit]")
    await expect(page.locator("#task-error")).to_have_text("没有任务开启后与居民接通的通话，不能标记为完成")
    await expect(page.locator("#status")).to_have_text("待处理")
    await screenshot(page, "task-refused")

    await answered(console, resident, datetime.now(SH) - timedelta(minutes=2))
    await page.goto(f"/tasks/{task_id}")
    await expect(page.locator("#task-calls tr[data-evidence]")).to_have_count(1)
    await page.fill("#close-form textarea[name=note]", "已回电，嘱按时服药")
    async with page.expect_navigation():
        await page.click("#close-form button[type=submit]")
    await expect(page.locator("#status")).to_have_text("已完成")
    await expect(page.locator("#close-note")).to_have_text("已回电，嘱按时服药")
    await expect(page.locator("#history tr[data-event=closed]")).to_have_count(1)
    await screenshot(page, "task-done")
