"""`hotline roster check|swap` and `hotline staff leave` through the real CLI and PostgreSQL, and
what routing makes of them."""

from __future__ import annotations

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from routing.calendar import WorkingCalendar
from routing.chain import DutyShift
from routing.people import StaffMember
from routing.roster_check import roster_gaps
from store.pii import PiiVault
from tests.conftest import run_cli
from tests.district import District, build_district

SH = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    # night shifts from Sunday 2026-11-22 17:00 to Sunday 2026-11-29 08:00; no weekend day shifts
    return await build_district(pool, vault, week_of=date(2026, 11, 22))


def test_gaps_are_exact_and_merged() -> None:
    doctor = StaffMember(1, "赵医生", "night_doctor", "sip:3001@x", center_id=10, district_id=1)
    t = lambda d, h, m=0: datetime(2026, 11, d, h, m, tzinfo=SH)  # noqa: E731
    shifts = [DutyShift(doctor, t(23, 17), t(24, 8), 10, 1),
              DutyShift(doctor, t(24, 17, 10), t(25, 8), 10, 1),   # starts ten minutes late
              DutyShift(doctor, t(25, 17), t(26, 8), None, 1)]     # a district shift covers too
    gaps = roster_gaps(WorkingCalendar(tz=SH), shifts, [(10, "北塘街", 1), (11, "寨上朝阳", 1)], t(23, 8), t(26, 8))
    assert [(g.center, g.starts_at, g.ends_at) for g in gaps] == [
        ("寨上朝阳", t(23, 17), t(24, 8)),        # the other center has only the district night
        ("北塘街", t(24, 17), t(24, 17, 10)),     # ten minutes, found exactly
        ("寨上朝阳", t(24, 17), t(25, 8)),
    ]
    assert "outside the day window 08:00–17:00" in gaps[1].why


async def test_roster_check_reports_the_unrostered_saturday(district: District, cli_env: dict[str, str]) -> None:
    result = run_cli(cli_env, "roster", "check", "--from", "2026-11-23", "--days", "6")
    assert result.returncode == 1, result.stderr
    assert "测试街: no doctor on the roster 2026-11-28 08:00 – 2026-11-28 17:00 (9 h;" in result.stdout
    assert "1 gap(s) in 1 center(s)" in result.stdout
    covered = run_cli(cli_env, "roster", "check", "--from", "2026-11-23", "--days", "5")
    assert covered.returncode == 0 and "0 gap(s)" in covered.stdout


async def test_swap_is_routed_and_explained(district: District, cli_env: dict[str, str],
                                            pool: asyncpg.Pool) -> None:
    swapped = run_cli(cli_env, "roster", "swap", "--at", "2026-11-24T21:00", "--from", "N001", "--to", "D001")
    assert swapped.returncode == 0, swapped.stderr
    assert "赵医生 → 王医生" in swapped.stdout
    routed = json.loads(run_cli(cli_env, "route", "--caller", "13800000001", "--at",
                                "2026-11-24T21:00:00+08:00", "--json").stdout)
    first = routed["targets"][0]
    assert (first["staff_id"], first["step"]) == (district.doctor_id, "duty")
    assert first["reason"].endswith("swapped from 赵医生")
    # the next night is still 赵医生's
    next_night = json.loads(run_cli(cli_env, "route", "--caller", "13800000001", "--at",
                                    "2026-11-25T21:00:00+08:00", "--json").stdout)
    assert next_night["targets"][0]["staff_id"] == district.night_id


@pytest.mark.parametrize(("args", "message", "code"), [
    (["--at", "2026-11-24T21:00", "--from", "N001", "--to", "A001"], "李助理 (A001) is a assistant, not a doctor", 2),
    (["--at", "2026-11-24T12:00", "--from", "N001", "--to", "D001"], "赵医生 (N001) has no shift at", 1),
    (["--at", "2026-11-24T21:00", "--from", "X999", "--to", "D001"], "no staff member has the number 'X999'", 1),
    (["--at", "2026-11-24T21:00", "--from", "N001", "--to", "D002"], "陈医生 (D002) left on", 2),
])
async def test_bad_swaps_say_why_and_change_nothing(district: District, cli_env: dict[str, str],
                                                    pool: asyncpg.Pool, args: list[str], message: str,
                                                    code: int) -> None:
    before = await pool.fetch("SELECT id, doctor_id FROM duty_shifts ORDER BY id")
    result = run_cli(cli_env, "roster", "swap", *args)
    assert result.returncode == code
    assert message in result.stderr
    assert await pool.fetch("SELECT id, doctor_id FROM duty_shifts ORDER BY id") == before


async def test_overlapping_swap_is_refused(district: District, cli_env: dict[str, str], pool: asyncpg.Pool) -> None:
    # 王医生 takes Tuesday night; then she cannot also take an overlapping shift of 赵医生's
    await pool.execute(
        "INSERT INTO duty_shifts (doctor_id, district_id, center_id, starts_at, ends_at)"
        " VALUES ($1, $2, $3, $4, $5)", district.doctor_id, district.district_id, None,
        datetime(2026, 11, 25, 20, tzinfo=SH), datetime(2026, 11, 25, 23, tzinfo=SH))
    result = run_cli(cli_env, "roster", "swap", "--at", "2026-11-25T21:00", "--from", "N001", "--to", "D001")
    assert result.returncode == 2
    assert "王医生 (D001) already has a shift overlapping 11-25 17:00–11-26 08:00" in result.stderr


async def test_leave_skips_the_doctor_with_the_reason(district: District, cli_env: dict[str, str]) -> None:
    put = run_cli(cli_env, "staff", "leave", "D001", "--from", "2026-11-23", "--to", "2026-11-30", "--reason", "进修")
    assert put.returncode == 0, put.stderr
    routed = json.loads(run_cli(cli_env, "route", "--caller", "13800000001", "--at",
                                "2026-11-24T10:00:00+08:00", "--json").stdout)
    own = routed["steps"][0]
    assert own["targets"] == []
    assert own["skipped"][0]["reason"] == "王医生 on leave until 11-30 (进修) → skipped"
    assert routed["targets"][0]["staff_id"] == district.assistant_id

    overlap = run_cli(cli_env, "staff", "leave", "D001", "--from", "2026-11-30", "--to", "2026-12-02")
    assert overlap.returncode == 2 and "already has leave overlapping" in overlap.stderr
    inverted = run_cli(cli_env, "staff", "leave", "D001", "--from", "2026-12-02", "--to", "2026-12-01")
    assert inverted.returncode == 2 and "is before --from" in inverted.stderr
    cancel = run_cli(cli_env, "staff", "leave", "D001", "--from", "2026-11-23", "--to", "2026-11-30", "--cancel")
    assert cancel.returncode == 0
    back = json.loads(run_cli(cli_env, "route", "--caller", "13800000001", "--at",
                              "2026-11-24T10:00:00+08:00", "--json").stdout)
    assert back["targets"][0]["staff_id"] == district.doctor_id


