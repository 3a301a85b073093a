"""转诊 in the console: the form and the API record a referral and open its follow-up; the list
per doctor and center within scope; bad input and residents out of scope refused whole, the
latter exactly as a resident that does not exist."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from routing.numbers import parse_id_number
from routing.records import NewResident, write_residents
from tests.console import SH, Harness, assert_conforms
from tests.district import id_number
from tests.test_web_tasks import new_resident

BODY = {"hospital": "区人民医院", "department": "心内科", "reason": "胸闷待查"}


async def counts(pool: asyncpg.Pool) -> tuple[int, int]:
    return (await pool.fetchval("SELECT count(*) FROM referrals"),
            await pool.fetchval("SELECT count(*) FROM tasks"))


async def test_a_doctor_records_a_referral_in_the_form_and_works_its_follow_up(console: Harness) -> None:
    resident, phone = await new_resident(console)
    doctor = await console.signed_in("family_doctor")
    page = await doctor.get("/referrals")
    assert page.status == 200 and 'id="referral-form"' in page.text and 'href="/referrals"' in page.text
    at = datetime.now(SH).replace(second=0, microsecond=0) - timedelta(hours=1)
    added = await doctor.form("/referrals", {"resident": phone, **BODY,
                                             "referred_at": at.strftime("%Y-%m-%dT%H:%M")})
    assert added.status == 303 and added.location and added.location.startswith("/tasks/")
    task_page = await doctor.get(added.location)
    assert "转诊回访" in task_page.text and "已住院" in task_page.text and 'name="outcome"' in task_page.text
    task_id = int(added.location.rsplit("/", 1)[1])
    task = await doctor.get_json(f"/api/v1/tasks/{task_id}")
    assert task["owner_no"] == "D001"
    assert datetime.fromisoformat(task["due_at"]) == at + timedelta(hours=72)

    doc = await console.openapi()
    mine = await doctor.get_json("/api/v1/referrals?doctor=D001")
    assert_conforms(doc, "GET", "/api/v1/referrals", 200, mine)
    assert task_id in {r["followup_task_id"] for r in mine["referrals"]}
    center = await (await console.signed_in("director")).get_json(
        f"/api/v1/referrals?center={console.district.center_id}")
    assert task_id in {r["followup_task_id"] for r in center["referrals"]}
    created = await doctor.json("POST", "/api/v1/referrals", {"resident_id": resident, **BODY}, status=200)
    assert_conforms(doc, "POST", "/api/v1/referrals", 200, created)
    assert (created["recorded_by_no"], created["followup_status"]) == ("D001", "open")
    assert (await (await console.signed_in("agent")).get("/referrals")).status == 403
    assert (await (await console.signed_in("assistant")).request(
        "POST", "/api/v1/referrals", json={"resident_id": resident, **BODY})).status == 403


async def test_bad_referrals_are_refused_whole_and_out_of_scope_is_unknown(console: Harness) -> None:
    resident, _ = await new_resident(console)
    doctor = await console.signed_in("family_doctor")
    # a resident of another center, no team of hers: not in her scope
    today = datetime.now(SH).date()
    async with console.pool.acquire() as conn, conn.transaction():
        other_center = await conn.fetchval(
            "INSERT INTO centers (district_id, name) VALUES ($1, '转诊别中心') RETURNING id",
            console.district.district_id)
        (stranger,) = (await write_residents(conn, console.vault, [NewResident(
            "别处居民", parse_id_number(id_number("19610101", f"{other_center % 1000:03d}")), other_center,
            [], console.district.doctor_id, None, (today - timedelta(days=3), today + timedelta(days=30)))])).ids
    before = await counts(console.pool)
    out = await doctor.request("POST", "/api/v1/referrals", json={"resident_id": stranger, **BODY})
    ghost = await doctor.request("POST", "/api/v1/referrals", json={"resident_id": 1_999_999_997, **BODY})
    assert (out.status, out.json()) == (ghost.status, ghost.json()) == (
        422, {"error": "unknown_resident", "message": "没有这个居民"})
    for body, code in (({"reason": "长" * 3000}, "too_long"), ({"hospital": "a\x00b"}, "bad_text"),
                       ({"department": "\x07响铃"}, "bad_text"), ({"hospital": " "}, "required"),
                       ({"referred_at": "明天"}, "bad_time"),
                       ({"referred_at": (datetime.now(SH) + timedelta(days=1)).isoformat()}, "bad_time"),
                       ({"resident_id": "1; DROP TABLE referrals"}, "unknown_resident"),
                       ({"hospital": 12}, "required")):
        got = await doctor.request("POST", "/api/v1/referrals", json={"resident_id": resident, **BODY, **body})
        assert (got.status, got.json()["error"]) == (422, code), (body, got.text[:200])
    huge = await doctor.form("/referrals", {"resident": f"id:{resident}", **BODY, "reason": "x" * (1024 * 1024)})
    assert huge.status == 413
    form = await doctor.form("/referrals", {"resident": f"id:{stranger}", **BODY})
    assert form.status == 422 and "没有这个居民" in form.text and "区人民医院" in form.text
    assert await counts(console.pool) == before
    hostile = "<img src=x onerror=alert(1)>"
    await doctor.json("POST", "/api/v1/referrals", {"resident_id": resident, **BODY, "reason": hostile}, status=200)
    listed = await doctor.get("/referrals")
    assert hostile not in listed.text and "&lt;img src=x onerror=alert(1)&gt;" in listed.text
