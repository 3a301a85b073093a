"""`hotline route` and `hotline residents` through the real CLI over a real PostgreSQL."""

from __future__ import annotations

import json
import os
import pwd
from datetime import date

import asyncpg
import pytest

from routing.directory import Directory
from store.pii import PiiVault
from tests.conftest import run_cli
from tests.district import District, build_district

MONDAY = date(2026, 11, 23)


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    # the week's roster starts the Sunday before, so Monday 07:59 is covered by a night shift
    return await build_district(pool, vault, week_of=date(2026, 11, 22))


def route_json(env: dict[str, str], caller: str, at: str) -> dict:
    result = run_cli(env, "route", "--caller", caller, "--at", at, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("at", "service", "first_role"),
    [
        ("2026-11-23T07:59:00+08:00", "night", "night_doctor"),
        ("2026-11-23T08:00:00+08:00", "day", "family_doctor"),
        ("2026-11-23T16:59:00+08:00", "day", "family_doctor"),
        ("2026-11-23T17:00:00+08:00", "night", "night_doctor"),
        ("2026-11-24T02:30:00+08:00", "night", "night_doctor"),  # the shift crossing midnight
        ("2026-11-28T12:00:00+08:00", "night", "agent"),  # Saturday noon: no day roster → desk
    ],
)
async def test_route_by_time_of_day(district: District, cli_env: dict[str, str], at: str,
                                    service: str, first_role: str) -> None:
    data = route_json(cli_env, "13800000001", at)
    assert data["service"] == service
    assert data["resident"] == {"id": district.resident_id, "name": "张桂兰"}
    first = data["targets"][0]
    assert first["role"] == first_role
    assert set(first) >= {"staff_id", "name", "role", "sip_uri"}
    assert data["reason"]


async def test_route_day_targets_and_caller_number_forms(district: District, cli_env: dict[str, str]) -> None:
    # the landline, written the way people write it, finds the same resident
    data = route_json(cli_env, "022-2532 0001", "2026-11-23T10:00:00+08:00")
    assert [(t["staff_id"], t["step"]) for t in data["targets"]] == [
        (district.doctor_id, "own_doctor"), (district.assistant_id, "assistant"),
        (district.agent_id, "desk")]
    assert data["targets"][0]["sip_uri"] == "sip:1001@127.0.0.1"
    # the team's third member left: shown as skipped, with why
    assert [s["step"] for s in data["steps"]] == ["own_doctor", "assistant", "team", "desk", "voicemail"]
    assert data["steps"][2]["skipped"][0]["reason"].startswith("陈医生 left on")
    assert data["caller"] == "022****0001"  # the output masks the number too


async def test_route_unknown_caller_and_departed_doctor(district: District, cli_env: dict[str, str]) -> None:
    unknown = route_json(cli_env, "13912345678", "2026-11-23T10:00:00+08:00")
    assert unknown["resident"] is None
    assert "unknown caller" in unknown["reason"]
    assert [t["staff_id"] for t in unknown["targets"]] == [district.agent_id]

    orphan = route_json(cli_env, "13800000002", "2026-11-23T10:00:00+08:00")
    own = orphan["steps"][0]
    assert own["step"] == "own_doctor" and own["targets"] == []
    assert own["skipped"][0]["reason"].startswith("陈医生 left on")
    # the departed doctor's team answers for him: assistant, then the team's other doctor
    assert [t["staff_id"] for t in orphan["targets"]] == [district.assistant_id, district.doctor_id,
                                                          district.agent_id]


async def test_route_text_output_explains(district: District, cli_env: dict[str, str]) -> None:
    result = run_cli(cli_env, "route", "--caller", "13800000001", "--at", "2026-11-23T10:00")
    assert result.returncode == 0, result.stderr
    assert "张桂兰" in result.stdout
    assert "own family doctor: own family doctor of 张桂兰, rings 20 s" in result.stdout
    assert "1. 王医生 (family_doctor, sip:1001@127.0.0.1) — family doctor under contract" in result.stdout
    assert "voicemail and callback" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--caller", "13800000001", "--at", "tomorrow"], "--at: cannot read 'tomorrow' as an ISO 8601 time"),
        (["--caller", "13800000001", "--at", "2026-02-30T10:00"], "--at: cannot read"),
        # too few digits to be anyone's number: quoted as typed (issue 8: mask only what is PII)
        (["--caller", "55555", "--at", "2026-11-23T10:00"], "--caller: '55555' is neither a mobile"),
        (["--caller", "12345", "--at", "2026-11-23T10:00"], "--caller: mobile number '12345' must have 11 digits"),
        (["--caller", "abc", "--at", "2026-11-23T10:00"], "--caller: phone number 'abc' has characters"),
        # a mistyped number is still somebody's number: masked
        (["--caller", "1380000000", "--at", "2026-11-23T10:00"], "--caller: mobile number '********00' must"),
        (["--caller", "+14155550123", "--at", "2026-11-23T10:00"], "--caller: phone number '+14*****0123' is not a mainland China number"),
        (["--caller", "138-0000-x001", "--at", "2026-11-23T10:00"], "--caller: phone number '138******x001' has"),
    ],
)
async def test_route_bad_input_says_so_plainly(district: District, cli_env: dict[str, str],
                                               args: list[str], message: str) -> None:
    result = run_cli(cli_env, "route", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


async def test_residents_show_and_list_are_audited(district: District, cli_env: dict[str, str],
                                                   pool: asyncpg.Pool) -> None:
    shown = run_cli(cli_env, "residents", "show", "13800000001", "--json", "--reason", "callback")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["id"] == district.resident_id
    assert data["name"] == "张桂兰"
    assert data["phones"] == ["13800000001", "02225320001"]
    assert data["doctor"] == {"staff_id": district.doctor_id, "name": "王医生"}
    assert data["id_number"] == "1201*************" + data["id_number"][-1]
    assert "birth_date" not in data  # with the sex and the check character it rebuilt the ID
    assert data["conditions"] == ["高血压"]

    listed = run_cli(cli_env, "residents", "list", "--center", "测试街", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["张桂兰", "刘建国"]
    assert rows[0]["phones"] == ["138****0001", "022****0001"]  # a listing shows masked numbers

    # the actor is who the system knows (the OS user); HOTLINE_ACTOR is kept beside it as a claim
    me = "cli:" + pwd.getpwuid(os.getuid()).pw_name
    audit = await pool.fetch("SELECT actor, claimed_actor, action, subject, reason FROM audit_log ORDER BY id")
    assert [tuple(r) for r in audit] == [
        (me, "test:cli", "resident.read", f"resident:{district.resident_id}", "callback"),
        (me, "test:cli", "resident.list", "center:测试街", "limit 20"),
    ]


async def test_residents_show_by_id_number_and_unknown(district: District, cli_env: dict[str, str]) -> None:
    from tests.district import id_number

    by_id = run_cli(cli_env, "residents", "show", id_number("19480312", "024"), "--json")
    assert json.loads(by_id.stdout)["id"] == district.resident_id

    missing = run_cli(cli_env, "residents", "show", "13912345678")
    assert missing.returncode == 1
    assert "no resident has the number 139****5678" in missing.stderr

    by_resident_id = run_cli(cli_env, "residents", "show", str(district.resident_id), "--json")
    assert by_resident_id.returncode == 0, by_resident_id.stderr
    assert json.loads(by_resident_id.stdout)["name"] == "张桂兰"

    bad = run_cli(cli_env, "residents", "list", "--center", "无此中心")
    assert bad.returncode == 1 and "no center named '无此中心'" in bad.stderr


async def test_directory_find_caller_reads_contract_and_assistants(
    district: District, pool: asyncpg.Pool, vault: PiiVault
) -> None:
    caller = await Directory(pool, vault).find_caller("+86 138 0000 0001")
    assert caller is not None and caller.resident_id == district.resident_id
    (contract,) = caller.contracts
    assert contract.doctor.name == "王医生"
    assert [a.id for a in caller.assistants[district.doctor_id]] == [district.assistant_id]
    assert await Directory(pool, vault).find_caller("anonymous") is None


async def test_unreachable_database_is_one_line_from_the_cli(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, HOTLINE_DATABASE_URL="postgresql://hotline:pw@127.0.0.1:1/hotline")
    result = run_cli(env, "route", "--caller", "13800000001", "--at", "2026-11-23T10:00")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "hotline: error: cannot reach PostgreSQL at 127.0.0.1:1/hotline: Connection refused"
    )


async def test_commands_refuse_a_database_without_schema(cli_env: dict[str, str],
                                                         empty_database_url: str) -> None:
    env = dict(cli_env, HOTLINE_DATABASE_URL=empty_database_url)
    result = run_cli(env, "residents", "list")
    assert result.returncode == 2
    assert "run `hotline migrate` first" in result.stderr
    assert run_cli(env, "migrate").returncode == 0
    assert run_cli(env, "residents", "list").returncode == 0


async def test_route_follows_the_state_councils_calendar(district: District, cli_env: dict[str, str]) -> None:
    holiday = route_json(cli_env, "13800000001", "2026-10-01T10:00:00+08:00")
    assert holiday["service"] == "night"
    assert "2026-10-01 is a public holiday (国庆节)" in holiday["reason"]
    # a Sunday that is a make-up working day (调休上班): day service, own doctor first
    makeup = route_json(cli_env, "13800000001", "2026-09-20T10:00:00+08:00")
    assert makeup["service"] == "day"
    assert makeup["targets"][0]["staff_id"] == district.doctor_id
    assert "make-up working day" in makeup["reason"]


async def test_lines_add_list_remove_and_route_by_line(district: District, cli_env: dict[str, str],
                                                       tmp_path) -> None:
    from ivr.prompts import PROMPT_DIR

    added = run_cli(cli_env, "lines", "add", "8001", "--center", "测试街", "--label", "测试街专线",
                    "--greeting", str(PROMPT_DIR / "desk.wav"))
    assert added.returncode == 0, added.stderr
    listed = run_cli(cli_env, "lines", "list")
    assert "8001: 测试区 / 测试街 — 测试街专线, greeting" in listed.stdout
    unknown = route_json(cli_env, "13912345678", "2026-11-23T10:00:00+08:00")
    assert "on 测试街专线" not in unknown["reason"]
    result = run_cli(cli_env, "route", "--caller", "13912345678", "--line", "8001", "--at",
                     "2026-11-23T10:00:00+08:00", "--json")
    assert "on 测试街专线" in json.loads(result.stdout)["reason"]

    (tmp_path / "noise.wav").write_bytes(b"not audio")
    for args, message, code in [
        (["add", "8001", "--center", "测试街"], "8001 is already a hotline line", 2),
        (["add", "8002", "--center", "无此中心"], "no center named '无此中心'", 1),
        (["add", "80 02"], "is not a dialable number", 2),
        (["add", "8002", "--greeting", str(tmp_path / "noise.wav")], "cannot be decoded as audio", 2),
        (["remove", "9999"], "no hotline line has the number '9999'", 1),
    ]:
        bad = run_cli(cli_env, "lines", *args)
        assert bad.returncode == code and message in bad.stderr, (args, bad.stderr)
    assert run_cli(cli_env, "route", "--caller", "13912345678", "--line", "9999").returncode == 1
    assert run_cli(cli_env, "lines", "remove", "8001").returncode == 0
    assert "no hotline lines" in run_cli(cli_env, "lines", "list").stdout
