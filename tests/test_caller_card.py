"""recordings.caller_card: the screen-pop's card of a call, for a viewer in scope (audited), for
the person rung, for an unknown caller; None out of scope."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from recordings.call_records import CallerNumber
from recordings.caller_card import caller_card
from routing.scope import Scope, Viewer
from store.pii import PiiVault
from tests.district import District, build_district

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=SH)


async def a_call(pool: asyncpg.Pool, vault: PiiVault, d: District, call_id: str, number: str, *,
                 resident_id: int | None, at: datetime, disposition: str = "in_progress",
                 answered_by: int | None = None, team_id: int | None = None) -> int:
    n = CallerNumber.of(vault, number)
    targets = [{"staff_id": d.doctor_id, "name": "王医生", "reason": "张桂兰's own family doctor"}]
    return await pool.fetchval(
        "INSERT INTO call_records (call_id, caller_number_hash, caller_number_enc, caller_number_masked,"
        " resident_id, offered_at, disposition, answered_by, district_id, center_id, team_id, route_reason,"
        " route_targets, ended_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'day service', $12::jsonb,"
        " CASE WHEN $7::text = 'in_progress' THEN NULL ELSE $6::timestamptz + interval '1 minute' END) RETURNING id",
        call_id, n.hash, n.encrypted, n.masked, resident_id, at, disposition, answered_by, d.district_id,
        d.center_id, team_id, json.dumps(targets))


async def test_the_card_of_a_residents_call_in_scope_is_complete_and_audited(
        pool: asyncpg.Pool, vault: PiiVault) -> None:
    d = await build_district(pool, vault, week_of=date(2026, 11, 23))
    for k in range(6):  # six earlier calls: the card shows the last five
        await a_call(pool, vault, d, f"old-{k}", "13800000001", resident_id=d.resident_id,
                     at=NOW - timedelta(days=6 - k), disposition="missed" if k % 2 else "connected",
                     answered_by=None if k % 2 else d.doctor_id, team_id=d.team_id)
    record_id = await a_call(pool, vault, d, "now", "13800000001", resident_id=d.resident_id, at=NOW,
                             team_id=d.team_id)
    n = CallerNumber.of(vault, "13800000001")
    task_id = await pool.fetchval(
        "WITH t AS (INSERT INTO tasks (kind, caller_key, resident_id, caller_number_hash, caller_number_enc,"
        " caller_number_masked, owner_staff_id, opened_at, due_at)"
        " VALUES ('callback', $1, $2, $3, $4, $5, $6, $7, $8) RETURNING id, opened_at, owner_staff_id),"
        " e AS (INSERT INTO task_events (task_id, version, at, event, owner_to) SELECT id, 1, opened_at, 'opened', owner_staff_id FROM t) SELECT id FROM t", f"resident:{d.resident_id}", d.resident_id, n.hash, n.encrypted, n.masked, d.doctor_id,
        NOW - timedelta(days=1), NOW - timedelta(hours=16))
    missed = await pool.fetchval("SELECT id FROM call_records WHERE call_id = 'old-5'")
    await pool.execute("INSERT INTO callback_calls VALUES ($1, $2)", task_id, missed)
    await pool.execute("INSERT INTO voicemails (task_id, call_record_id, path, seconds, sha256, recorded_at)"
                       " VALUES ($1, $2, '/x.wav', 4.5, $3, $4)", task_id, missed, "0" * 64, NOW - timedelta(days=1))
    doctor = Scope(Viewer(d.doctor_id, "D001", "王医生", "family_doctor", d.district_id, d.center_id, d.team_id))

    card = await caller_card(pool, vault, doctor, record_id, now=NOW)

    assert card is not None and card.known and card.caller == "138****0001"
    assert card.resident == {"id": d.resident_id, "name": "张桂兰", "id_number": "1201*************" +
                             card.resident["id_number"][-1], "age": 78, "sex": "F", "center": "测试街",
                             "conditions": ["高血压"]}  # born 1948-03-12: 78 on 2026-11-24
    assert card.contract is not None and (card.contract["doctor"], card.contract["team"]) == ("王医生", "测试一团队")
    assert card.route_reason == "day service" and card.rung_because == "张桂兰's own family doctor"
    assert [c["disposition"] for c in card.last_calls] == ["missed", "connected", "missed", "connected", "missed"]
    assert card.last_calls[0]["record_id"] == missed
    assert len(card.open_tasks) == 1 and card.open_tasks[0]["missed_calls"] == 1
    assert [v["seconds"] for v in card.open_tasks[0]["voicemails"]] == [4.5]
    audit = await pool.fetch("SELECT actor, action, subject, reason FROM audit_log")
    assert [tuple(a) for a in audit] == [("staff:D001", "resident.card", f"resident:{d.resident_id}",
                                         f"call:{record_id}")]
    assert "1948" not in json.dumps(card.as_json(), ensure_ascii=False)  # no birth date in clear


async def test_out_of_scope_is_none_the_rung_agent_sees_it_and_an_unknown_caller_says_so(
        pool: asyncpg.Pool, vault: PiiVault) -> None:
    d = await build_district(pool, vault, week_of=date(2026, 11, 23))
    record_id = await a_call(pool, vault, d, "unknown", "13912345678", resident_id=None, at=NOW)
    agent = Scope(Viewer(d.agent_id, "G001", "孙客服", "agent", d.district_id))
    other_director = Scope(Viewer(d.doctor_id, "X9", "x", "director", d.district_id, d.center_id + 1000))

    assert await caller_card(pool, vault, agent, record_id, now=NOW) is None  # not rung, not taken
    assert await caller_card(pool, vault, other_director, record_id, now=NOW) is None
    assert await caller_card(pool, vault, agent, record_id + 999, now=NOW) is None  # no such call

    await pool.execute("INSERT INTO dial_attempts (call_record_id, seq, staff_id, sip_uri, started_at)"
                       " VALUES ($1, 1, $2, 'sip:4001@127.0.0.1', $3)", record_id, d.agent_id, NOW)
    card = await caller_card(pool, vault, agent, record_id, now=NOW)
    assert card is not None and not card.known and card.resident is None and card.contract is None
    assert card.caller == "139****5678" and card.last_calls == [] and card.open_tasks == []
    assert "13912345678" not in json.dumps(card.as_json())
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 0  # nothing clear was read
