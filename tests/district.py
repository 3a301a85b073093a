"""A small hand-built district for tests that need known rows (not the demo seed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from routing.numbers import id_check_char, parse_id_number
from routing.records import (
    NewResident,
    NewShift,
    NewStaff,
    write_residents,
    write_shifts,
    write_staff,
)
from store.pii import PiiVault

SH = ZoneInfo("Asia/Shanghai")
DIRECTORY_TABLES = ("districts", "centers", "teams", "staff", "residents", "resident_phones",
                    "contracts", "resident_conditions", "guardians", "duty_shifts")


async def table_counts(pool: asyncpg.Pool) -> dict[str, int]:
    """Rows per directory table: equal before and after means nothing was half-written."""
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in DIRECTORY_TABLES}  # noqa: S608


def id_number(birth: str, serial: str = "123") -> str:
    """A valid 18-character ID number born on `birth` (YYYYMMDD); odd last serial digit = male."""
    first17 = "120116" + birth + serial
    return first17 + id_check_char(first17)


@dataclass(frozen=True)
class District:
    district_id: int
    center_id: int
    team_id: int
    doctor_id: int
    assistant_id: int
    night_id: int
    agent_id: int
    departed_doctor_id: int
    resident_id: int          # 张桂兰, 13800000001, doctor 王医生
    orphan_id: int            # 刘建国, 13800000002, doctor 陈医生 who has left


async def build_district(pool: asyncpg.Pool, vault: PiiVault, *, week_of: date) -> District:
    """One center, one team, a night shift for every night of the week starting `week_of`."""
    async with pool.acquire() as conn, conn.transaction():
        district_id = await conn.fetchval("INSERT INTO districts (name) VALUES ('测试区') RETURNING id")
        center_id = await conn.fetchval(
            "INSERT INTO centers (district_id, name) VALUES ($1, '测试街') RETURNING id", district_id)
        team_id = await conn.fetchval(
            "INSERT INTO teams (center_id, name) VALUES ($1, '测试一团队') RETURNING id", center_id)
        staff = [
            NewStaff("D001", "王医生", "family_doctor", district_id, center_id, team_id,
                     "sip:1001@127.0.0.1", "13900000001"),
            NewStaff("A001", "李助理", "assistant", district_id, center_id, team_id, "sip:2001@127.0.0.1"),
            NewStaff("N001", "赵医生", "night_doctor", district_id, center_id, None, "sip:3001@127.0.0.1"),
            NewStaff("G001", "孙客服", "agent", district_id, None, None, "sip:4001@127.0.0.1"),
            NewStaff("D002", "陈医生", "family_doctor", district_id, center_id, team_id, "sip:1002@127.0.0.1"),
        ]
        doctor, assistant, night, agent, departed = await write_staff(conn, vault, staff)
        await conn.execute("UPDATE staff SET left_on = $1 WHERE id = $2", week_of - timedelta(days=30), departed)
        contract = (week_of - timedelta(days=100), week_of + timedelta(days=265))
        residents = [
            NewResident("张桂兰", parse_id_number(id_number("19480312", "024")), center_id,
                        ["13800000001", "02225320001"], doctor, team_id, contract, ["高血压"]),
            NewResident("刘建国", parse_id_number(id_number("19550101", "013")), center_id,
                        ["13800000002"], departed, team_id, contract),
        ]
        written = await write_residents(conn, vault, residents)
        shifts = [
            NewShift(night, district_id, center_id,
                     datetime.combine(week_of + timedelta(days=i), time(17), SH),
                     datetime.combine(week_of + timedelta(days=i + 1), time(8), SH))
            for i in range(7)
        ]
        await write_shifts(conn, shifts)
    return District(district_id, center_id, team_id, doctor, assistant, night, agent, departed,
                    *written.ids)
