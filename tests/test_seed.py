"""The demo and synthetic districts (routing/seed.py) over a real PostgreSQL."""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from routing.directory import Directory
from routing.numbers import parse_id_number
from routing.records import ID_NUMBER
from routing.seed import (
    ROSTER_DAYS,
    AlreadySeeded,
    SeedError,
    extend_synthetic_roster,
    seed_demo,
    seed_synthetic,
    synthetic_phone,
)
from store import db
from store.pii import PiiVault
from tests.conftest import TEMPLATE_DB, run_cli, scratch_database
from tests.district import table_counts

SH = ZoneInfo("Asia/Shanghai")
TODAY = date(2026, 11, 20)  # a Friday
# 31 nights × (3 centers + the district) + 3 centers × 9 weekend days from 2026-11-20
DEMO_COUNTS = {"centers": 3, "teams": 8, "staff": 36, "residents": 300, "guardians": 117,
               "shifts": 151}


async def team_doctor(pool: asyncpg.Pool, team: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT s.id, s.name, s.sip_uri FROM staff s JOIN teams t ON t.id = s.team_id"
        " WHERE t.name = $1 AND s.role = 'family_doctor'", team)


def local(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), SH)


@pytest.fixture
async def demo(pool: asyncpg.Pool, vault: PiiVault) -> dict[str, int]:
    return await seed_demo(pool, vault, today=TODAY, tz=SH)


async def test_demo_counts_and_staff(demo: dict[str, int], pool: asyncpg.Pool) -> None:
    assert demo == DEMO_COUNTS
    in_tables = await table_counts(pool)
    assert {kind: in_tables[table] for kind, table in (
        ("centers", "centers"), ("teams", "teams"), ("staff", "staff"), ("residents", "residents"),
        ("guardians", "guardians"), ("shifts", "duty_shifts"))} == DEMO_COUNTS
    roles = dict(await pool.fetch("SELECT role, count(*) FROM staff GROUP BY role"))
    assert roles == {"family_doctor": 8, "assistant": 8, "night_doctor": 8, "agent": 5,
                     "supervisor": 3, "director": 3, "district_admin": 1}
    desk = await pool.fetchval("SELECT count(*) FROM staff WHERE role = 'agent' AND center_id IS NULL")
    assert desk == 2
    # every doctor, assistant, night doctor and agent has an extension of the documented plan
    extensions = await pool.fetch(
        "SELECT role, array_agg(sip_uri ORDER BY id) AS uris FROM staff"
        " WHERE role IN ('family_doctor', 'assistant', 'night_doctor', 'agent') GROUP BY role")
    first_digit = {"family_doctor": "1", "assistant": "2", "night_doctor": "3", "agent": "4"}
    for row in extensions:
        n = len(row["uris"])
        d = first_digit[row["role"]]
        assert row["uris"] == [f"sip:{d}{k:03d}@127.0.0.1" for k in range(1, n + 1)]
    assert await pool.fetchval("SELECT count(*) FROM staff WHERE mobile_hash IS NULL") == 0


async def test_demo_residents_are_plausible(demo: dict[str, int], pool: asyncpg.Pool,
                                            vault: PiiVault) -> None:
    rows = await pool.fetch("SELECT id, id_number_enc, sex FROM residents")
    born = {}
    for r in rows:
        card = parse_id_number(vault.decrypt(ID_NUMBER, r["id_number_enc"]))  # valid check digit
        assert card.sex == r["sex"]
        born[r["id"]] = card.birth_date
    assert await pool.fetchval(
        "SELECT count(*) FROM residents r"
        " WHERE NOT EXISTS (SELECT 1 FROM resident_phones p WHERE p.resident_id = r.id)") == 0
    landlines = await pool.fetchval("SELECT count(*) FROM resident_phones WHERE phone_masked LIKE '022%'")
    assert landlines > 30
    contracts = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE $1 BETWEEN starts_on AND ends_on) AS in_force,"
        "       count(*) FILTER (WHERE ends_on < $1) AS expired FROM contracts", TODAY)
    assert 230 < contracts["in_force"] < 290 and contracts["expired"] > 10
    # a contract starts after the birth, never on it (a start on the birth date published it)
    for c in await pool.fetch("SELECT resident_id, starts_on FROM contracts"):
        assert c["starts_on"] > born[c["resident_id"]]
    per_center = await pool.fetch(
        "SELECT c.name, count(*) FROM residents r JOIN centers c ON c.id = r.center_id GROUP BY c.name")
    assert dict(per_center) == {"北塘街": 120, "寨上朝阳": 100, "古林街": 80}
    conditions = dict(await pool.fetch("SELECT condition, count(*) FROM resident_conditions GROUP BY 1"))
    assert {"高血压", "糖尿病", "冠心病", "慢阻肺"} <= set(conditions)


async def birth_dates(pool: asyncpg.Pool, vault: PiiVault) -> dict[int, date]:
    """Every resident's birth date, from the encrypted ID number (no longer a clear column)."""
    return {r["id"]: parse_id_number(vault.decrypt(ID_NUMBER, r["id_number_enc"])).birth_date
            for r in await pool.fetch("SELECT id, id_number_enc FROM residents")}


async def test_demo_children_have_guardians_in_their_family(demo: dict[str, int], pool: asyncpg.Pool,
                                                            vault: PiiVault) -> None:
    born = await birth_dates(pool, vault)
    children = [{"id": rid} for rid, b in born.items() if b > TODAY.replace(year=TODAY.year - 14)]
    assert len(children) > 20
    links = await pool.fetch(
        "SELECT g.child_id, g.relation, g.guardian_id, c.center_id = a.center_id AS same_center,"
        "       EXISTS (SELECT 1 FROM resident_phones cp JOIN resident_phones ap"
        "               ON ap.phone_hash = cp.phone_hash"
        "               WHERE cp.resident_id = g.child_id AND ap.resident_id = g.guardian_id) AS shares_a_number"
        " FROM guardians g JOIN residents c ON c.id = g.child_id JOIN residents a ON a.id = g.guardian_id")
    assert {r["child_id"] for r in links} == {c["id"] for c in children}
    for link in links:
        assert link["relation"] in {"母亲", "父亲"}
        assert born[link["guardian_id"]] < TODAY.replace(year=TODAY.year - 18)
        assert link["same_center"]
        # the child is reached at the mother's numbers (the father's too if they share a landline)
        assert link["shares_a_number"] or link["relation"] == "父亲"


async def test_well_known_residents(demo: dict[str, int], pool: asyncpg.Pool, vault: PiiVault) -> None:
    directory = Directory(pool, vault)
    zhang = await directory.find_caller("13800000001")
    assert zhang is not None and zhang.name == "张桂兰"
    (contract,) = zhang.contracts
    assert (contract.starts_on, contract.ends_on) == (TODAY - timedelta(days=300), TODAY + timedelta(days=65))
    doctor = await team_doctor(pool, "北塘街一团队")
    assert (contract.doctor.id, contract.doctor.sip_uri) == (doctor["id"], "sip:1001@127.0.0.1")
    assert [a.sip_uri for a in zhang.assistants[doctor["id"]]] == ["sip:2001@127.0.0.1"]
    assert (await directory.find_caller("022-2532-0001")).resident_id == zhang.resident_id

    liu = await directory.find_caller("13800000002")
    assert liu is not None and liu.name == "刘建国"
    assert not any(c.in_force(TODAY) for c in liu.contracts)

    # the family landline and the mother's mobile find the mother, not her child
    for number in ("13800000003", "02225320003"):
        assert (await directory.find_caller(number)).name == "陈静"
    guardians = await pool.fetch(
        "SELECT c.name AS child, g.name AS guardian, l.relation FROM guardians l"
        " JOIN residents c ON c.id = l.child_id JOIN residents g ON g.id = l.guardian_id"
        " WHERE c.name = '刘子涵'")
    assert [tuple(r) for r in guardians] == [("刘子涵", "陈静", "母亲")]


async def test_roster_covers_every_night_and_weekend_day(demo: dict[str, int], pool: asyncpg.Pool,
                                                         vault: PiiVault) -> None:
    directory = Directory(pool, vault)
    centers = {r["id"] for r in await pool.fetch("SELECT id FROM centers")}
    assert {s.center_id for s in await directory.roster_at(local(TODAY, 3))} == centers | {None}
    for n in range(ROSTER_DAYS):
        day = TODAY + timedelta(days=n)
        night = await directory.roster_at(local(day, 21))
        assert {s.center_id for s in night} == centers | {None}, day
        assert {s.center_id for s in await directory.roster_at(local(day + timedelta(days=1), 7))} \
            == centers | {None}, day
        if day.weekday() < 5:
            assert await directory.roster_at(local(day, 10)) == [], day
        else:
            daytime = await directory.roster_at(local(day, 12))
            assert {s.center_id for s in daytime} == centers, day
            assert {s.doctor.role for s in daytime} == {"family_doctor"}
    assert await directory.roster_at(local(TODAY + timedelta(days=ROSTER_DAYS), 21)) == []


async def test_demo_clock_suggestions_fall_inside_the_roster(demo: dict[str, int], pool: asyncpg.Pool) -> None:
    """The demo banner's suggested clocks: a night instant a duty doctor of 北塘街 is rostered for
    (with hours of the shift left), a day instant of day service; none once the roster has run out."""
    from routing.calendar_store import calendar_loader
    from routing.seed import demo_clock

    async with pool.acquire() as conn:
        calendar = await calendar_loader(SH)(conn)
        center = await conn.fetchval("SELECT id FROM centers WHERE name = '北塘街'")
        for now in (local(TODAY, 12), local(TODAY, 23), local(TODAY + timedelta(days=20), 9)):
            clock = await demo_clock(conn, calendar, now)
            assert clock.night is not None and clock.day is not None, now
            assert now <= clock.night and now <= clock.day
            assert not calendar.day_service(clock.night, center).day
            assert calendar.day_service(clock.day, center).day
            assert await conn.fetchval(
                "SELECT count(*) FROM duty_shifts WHERE center_id = $1 AND kind = 'duty'"
                " AND starts_at <= $2 AND ends_at >= $2 + interval '2 hours'", center, clock.night) >= 1
            assert clock.day <= clock.roster_ends
        late = await demo_clock(conn, calendar, local(TODAY + timedelta(days=ROSTER_DAYS + 2), 12))
        assert (late.day, late.night) == (None, None)


async def test_seeding_the_demo_twice_is_refused(demo: dict[str, int], pool: asyncpg.Pool,
                                                 vault: PiiVault) -> None:
    before = await table_counts(pool)
    with pytest.raises(AlreadySeeded, match="the demo district 滨海新区 is already loaded"):
        await seed_demo(pool, vault, today=TODAY + timedelta(days=1), tz=SH)
    assert await table_counts(pool) == before
    assert issubclass(AlreadySeeded, SeedError)


# --- synthetic -----------------------------------------------------------------------------------

@pytest.fixture
async def other_pool(pg_admin_url: str, template_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A second fresh database, to load the same synthetic district twice."""
    async with scratch_database(pg_admin_url, "hotline_test_seed", TEMPLATE_DB) as url:
        p = await db.create_pool(url, max_size=2)
        yield p
        await p.close()


async def fingerprint(pool: asyncpg.Pool) -> list[tuple]:
    """Everything but database ids and AES-GCM nonces, in load order."""
    rows = await pool.fetch(
        "SELECT r.name, r.sex, r.id_number_hash, ce.name AS center, d.name AS doctor,"
        "       c.starts_on, c.ends_on,"
        "       ARRAY(SELECT phone_hash FROM resident_phones p WHERE p.resident_id = r.id"
        "             ORDER BY position) AS phones,"
        "       ARRAY(SELECT condition FROM resident_conditions rc WHERE rc.resident_id = r.id"
        "             ORDER BY condition) AS conditions"
        " FROM residents r JOIN centers ce ON ce.id = r.center_id"
        " LEFT JOIN contracts c ON c.resident_id = r.id LEFT JOIN staff d ON d.id = c.doctor_id"
        " ORDER BY r.id")
    return [tuple(r) for r in rows]


async def test_synthetic_district(pool: asyncpg.Pool, vault: PiiVault) -> None:
    counts = await seed_synthetic(pool, vault, residents=2000, seed=7, today=TODAY, tz=SH)
    assert counts["residents"] == 2000 and counts["centers"] == 1 and counts["teams"] == 1
    assert await pool.fetchval("SELECT count(*) FROM residents") == 2000
    assert await pool.fetchval("SELECT sip_uri FROM staff WHERE staff_no = 'S7-0001'") \
        == "sip:1001@synthetic7.invalid"
    directory = Directory(pool, vault)
    for i in (0, 1, 999, 1999):
        caller = await directory.find_caller(synthetic_phone(7, i))
        assert caller is not None, i
    assert await directory.find_caller(synthetic_phone(7, 2000)) is None
    assert {s.center_id for s in await directory.roster_at(local(TODAY, 21))} >= {None}
    with pytest.raises(AlreadySeeded, match="合成区7 is already loaded"):
        await seed_synthetic(pool, vault, residents=2000, seed=7, today=TODAY, tz=SH)


async def test_synthetic_is_the_same_for_the_same_seed(pool: asyncpg.Pool, other_pool: asyncpg.Pool,
                                                       vault: PiiVault) -> None:
    for p in (pool, other_pool):
        await seed_synthetic(p, vault, residents=2000, seed=3, today=TODAY, tz=SH)
    assert await fingerprint(pool) == await fingerprint(other_pool)
    for i in (0, 42, 1234, 1999):
        here = await Directory(pool, vault).find_caller(synthetic_phone(3, i))
        there = await Directory(other_pool, vault).find_caller(synthetic_phone(3, i))
        assert (here.name, [c.doctor.name for c in here.contracts]) == \
            (there.name, [c.doctor.name for c in there.contracts])

    # another seed is another district, and it fits in the same database
    await seed_synthetic(pool, vault, residents=2000, seed=4, today=TODAY, tz=SH)
    assert await pool.fetchval("SELECT count(*) FROM residents") == 4000
    assert (await Directory(pool, vault).find_caller(synthetic_phone(4, 0))).name \
        != (await Directory(pool, vault).find_caller(synthetic_phone(3, 0))).name


async def roster_fingerprint(pool: asyncpg.Pool) -> list[tuple]:
    rows = await pool.fetch(
        "SELECT st.staff_no, c.name AS center, s.kind, s.starts_at, s.ends_at FROM duty_shifts s"
        " JOIN staff st ON st.id = s.doctor_id LEFT JOIN centers c ON c.id = s.center_id"
        " ORDER BY s.starts_at, c.name NULLS LAST, s.kind")
    return [tuple(r) for r in rows]


async def test_synthetic_roster_of_a_year_and_extending_a_short_one(
        pool: asyncpg.Pool, other_pool: asyncpg.Pool, vault: PiiVault) -> None:
    days, holiday = 60, date(2026, 12, 31)  # a Thursday, rostered like a weekend day
    counts = await seed_synthetic(other_pool, vault, residents=2000, seed=5, today=TODAY, tz=SH,
                                  roster_days=days, holidays={holiday})
    weekend_days = sum((TODAY + timedelta(days=n)).weekday() >= 5 for n in range(days))
    assert counts["shifts"] == (days + 1) * 2 + weekend_days + 1  # 1 center + the district backup
    directory = Directory(other_pool, vault)
    assert {s.center_id for s in await directory.roster_at(local(TODAY + timedelta(days=days - 1), 21))} \
        >= {None}
    assert len(await directory.roster_at(local(holiday, 10))) == 1
    assert await directory.roster_at(local(holiday + timedelta(days=1), 10)) == []  # a Friday

    # the same district seeded with the default 30 days, then extended: the same roster
    await seed_synthetic(pool, vault, residents=2000, seed=5, today=TODAY, tz=SH)
    assert await pool.fetchval("SELECT count(*) FROM duty_shifts") < counts["shifts"]
    seeded_on, added = await extend_synthetic_roster(pool, seed=5, tz=SH, roster_days=days,
                                                     holidays={holiday})
    assert seeded_on == TODAY and added > 0
    assert await roster_fingerprint(pool) == await roster_fingerprint(other_pool)
    assert await extend_synthetic_roster(pool, seed=5, tz=SH, roster_days=days,
                                         holidays={holiday}) == (TODAY, 0)
    with pytest.raises(SeedError, match="合成区6 is not loaded"):
        await extend_synthetic_roster(pool, seed=6, tz=SH, roster_days=days)


def test_synthetic_phones_are_distinct_valid_mobiles() -> None:
    numbers = {synthetic_phone(1, i, line) for i in range(20_000) for line in (0, 1)}
    assert len(numbers) == 40_000
    assert all(len(n) == 11 and n[:2] in {"13", "15", "18", "19"} for n in numbers)


async def test_synthetic_refuses_an_empty_district(pool: asyncpg.Pool, vault: PiiVault) -> None:
    with pytest.raises(SeedError, match="at least 1 resident"):
        await seed_synthetic(pool, vault, residents=0, seed=1, today=TODAY, tz=SH)


# --- through the CLI -------------------------------------------------------------------------------

async def test_cli_seed_demo_then_route_and_show(cli_env: dict[str, str], pool: asyncpg.Pool) -> None:
    seeded = run_cli(cli_env, "seed", "demo")
    assert seeded.returncode == 0, seeded.stderr
    assert "3 centers" in seeded.stdout and "300 residents" in seeded.stdout
    again = run_cli(cli_env, "seed", "demo")
    assert again.returncode == 2
    assert again.stderr.strip() == (
        "hotline: error: the demo district 滨海新区 is already loaded; nothing was changed")
    assert "try night service: HOTLINE_CLOCK_START=" in seeded.stdout
    tolerant = run_cli(cli_env, "seed", "demo", "--if-missing")
    assert tolerant.returncode == 0 and "already loaded" in tolerant.stdout
    assert "try day service: HOTLINE_CLOCK_START=" in tolerant.stdout

    # the CLI seeds relative to the real today; the next Monday is inside 张桂兰's contract
    today = datetime.now(SH).date()
    monday = today + timedelta(days=7 - today.weekday())
    routed = run_cli(cli_env, "route", "--caller", "13800000001", "--at",
                     f"{monday.isoformat()}T10:00+08:00", "--json")
    assert routed.returncode == 0, routed.stderr
    decision = json.loads(routed.stdout)
    doctor = await team_doctor(pool, "北塘街一团队")
    assert decision["service"] == "day"
    assert decision["resident"]["name"] == "张桂兰"
    first = decision["targets"][0]
    assert (first["staff_id"], first["role"], first["sip_uri"]) == \
        (doctor["id"], "family_doctor", "sip:1001@127.0.0.1")

    shown = run_cli(cli_env, "residents", "show", "13800000001", "--json")
    assert shown.returncode == 0, shown.stderr
    resident = json.loads(shown.stdout)
    assert resident["name"] == "张桂兰"
    assert resident["phones"] == ["13800000001", "02225320001"]
    assert resident["doctor"] == {"staff_id": doctor["id"], "name": doctor["name"]}
    # (the seed's demo console logins are audited too: tests/test_staff_password_cli.py)
    audit = await pool.fetch("SELECT actor, claimed_actor, action, subject FROM audit_log"
                             " WHERE action NOT LIKE 'account.%'")
    me = "cli:" + pwd.getpwuid(os.getuid()).pw_name  # the known actor; HOTLINE_ACTOR is a claim
    assert [tuple(r) for r in audit] == [(me, "test:cli", "resident.read", f"resident:{resident['id']}")]
