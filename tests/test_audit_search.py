"""store/audit.py search_audit: filters, keyset pages newest first, and the indexes it reads."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from store.audit import record_read, search_audit, subject

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=SH)

# (actor, action, subject, minutes after T0)
ROWS = [
    ("staff:D001", "resident.read", "resident:12", 0),
    ("staff:D001", "recording.play", "recording:5", 10),
    ("staff:Q001", "recording.play", "recording:5", 20),
    ("staff:Q001", "resident.read", "resident:12", 30),
    ("staff:Q001", "export", "export:calls", 40),
    ("staff:D001", "voicemail.play", "voicemail:3", 50),
    ("cli:root", "resident.read", "resident:13", 60),
    ("staff:D001", "call.read", "call:7", 70),
]


@pytest.fixture
async def ids(pool: asyncpg.Pool) -> list[int]:
    out = []
    for actor, action, subj, minutes in ROWS:
        out.append(await pool.fetchval(
            "INSERT INTO audit_log (at, actor, action, subject, reason) VALUES ($1, $2, $3, $4, 'r')"
            " RETURNING id", T0 + timedelta(minutes=minutes), actor, action, subj))
    return out


async def test_filters_each_and_together(pool: asyncpg.Pool, ids: list[int]) -> None:
    def picked(*rows: int) -> list[int]:
        return [ids[i] for i in sorted(rows, reverse=True)]

    assert [r.id for r in await search_audit(pool)] == picked(*range(8))
    assert [r.id for r in await search_audit(pool, actor="staff:D001")] == picked(0, 1, 5, 7)
    assert [r.id for r in await search_audit(pool, subject="resident:12")] == picked(0, 3)
    assert [r.id for r in await search_audit(pool, subject="recording:5",
                                             actor="staff:Q001")] == picked(2)
    assert [r.id for r in await search_audit(pool, action="resident.read")] == picked(0, 3, 6)
    # since included, until excluded
    window = await search_audit(pool, since=T0 + timedelta(minutes=20),
                                until=T0 + timedelta(minutes=50))
    assert [r.id for r in window] == picked(2, 3, 4)
    assert await search_audit(pool, actor="staff:nobody") == []
    # SQL in a filter is only a value that matches nothing
    assert await search_audit(pool, subject="resident:12' OR '1'='1") == []
    row = (await search_audit(pool, subject="export:calls"))[0]
    assert (row.actor, row.action, row.subject, row.reason, row.claimed_actor) == (
        "staff:Q001", "export", "export:calls", "r", None)
    assert row.at == T0 + timedelta(minutes=40)


async def test_keyset_pages_walk_everything_once_newest_first(
        pool: asyncpg.Pool, ids: list[int]) -> None:
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        page = await search_audit(pool, after_id=after, limit=3)
        if not page:
            break
        pages += 1
        assert len(page) <= 3
        seen += [r.id for r in page]
        after = page[-1].id
    assert pages == 3 and seen == sorted(ids, reverse=True)
    # a filtered walk: D001's 4 rows in pages of 3
    first = await search_audit(pool, actor="staff:D001", limit=3)
    second = await search_audit(pool, actor="staff:D001", after_id=first[-1].id, limit=3)
    assert [r.id for r in first + second] == [ids[7], ids[5], ids[1], ids[0]]
    # rows written after the first page do not shift the next pages
    await record_read(pool, actor="staff:D001", action="resident.read",  # type: ignore[arg-type]
                      subject=subject("resident", 12))
    again = await search_audit(pool, actor="staff:D001", after_id=first[-1].id, limit=3)
    assert [r.id for r in again] == [ids[0]]
    assert (await search_audit(pool, actor="staff:D001", limit=1))[0].subject == "resident:12"


def test_subject_names() -> None:
    assert subject("resident", 12) == "resident:12"
    assert subject("recording", 5) == "recording:5"
    assert subject("voicemail", 3) == "voicemail:3"
    assert subject("call", 7) == "call:7"
    assert subject("export", "calls") == "export:calls"
    with pytest.raises(ValueError):
        subject("password", 1)


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


async def test_a_filtered_page_reads_its_index_from_the_cursor(pool: asyncpg.Pool) -> None:
    # 100 000 rows: one busy actor (1 in 20 rows) among 500, 5 000 residents
    await pool.execute(
        """INSERT INTO audit_log (at, actor, action, subject)
           SELECT $1::timestamptz + i * interval '1 second',
                  CASE WHEN i % 20 = 0 THEN 'staff:BUSY' ELSE 'staff:S' || (i % 500) END,
                  'resident.read', 'resident:' || (i % 5000)
             FROM generate_series(1, 100000) i""", T0)
    await pool.execute("ANALYZE audit_log")
    # (the busy actor's page may as well walk the primary key back from the cursor: 1 row in 20
    # matches; either way no sort)
    for column, value, indexes in (("actor", "staff:BUSY", {"audit_log_actor_id", "audit_log_pkey"}),
                                   ("actor", "staff:S7", {"audit_log_actor_id"}),
                                   ("subject", "resident:42", {"audit_log_subject_id"})):
        sql = (f"EXPLAIN (FORMAT JSON) SELECT id FROM audit_log WHERE {column} = $1"  # noqa: S608 - test constants
               " AND id < $2 ORDER BY id DESC LIMIT 50")
        plan = json.loads(await pool.fetchval(sql, value, 90000))[0]["Plan"]
        nodes = plan_nodes(plan)
        # the filter's own index, never the whole table; a sort only of the few rows it found
        used = {n["Index Name"] for n in nodes if "Index Name" in n}
        assert len(used) == 1 and used <= indexes, plan
        assert not any(n["Node Type"] == "Seq Scan" for n in nodes), plan
        assert not any(n["Node Type"] == "Sort" and n["Plan Rows"] > 1000 for n in nodes), plan
        if value == "staff:BUSY":  # 5 000 rows: read in id order from the cursor, no sort at all
            assert not any(n["Node Type"] == "Sort" for n in nodes), plan
    page = await search_audit(pool, actor="staff:BUSY", after_id=90000, limit=50)
    assert [r.id for r in page] == list(range(89980, 89980 - 50 * 20, -20))
    assert all(r.actor == "staff:BUSY" for r in page)


async def test_a_district_reads_its_own_audit_log_only(pool: asyncpg.Pool) -> None:
    """What the staff of another district did is not in this district's log; what no staff
    member did (the operators' CLI) is in every district's."""
    mine = await pool.fetchval("INSERT INTO districts (name) VALUES ('本区') RETURNING id")
    other = await pool.fetchval("INSERT INTO districts (name) VALUES ('他区') RETURNING id")
    await pool.execute("INSERT INTO staff (staff_no, name, role, district_id) VALUES"
                       " ('AU01', '本区质控', 'supervisor', $1), ('AU02', '他区质控', 'supervisor', $2)",
                       mine, other)
    async with pool.acquire() as conn:
        for actor in ("staff:AU01", "staff:AU02", "cli:root"):
            await record_read(conn, actor=actor, action="resident.read", subject="resident:1")
    seen = {r.actor for r in await search_audit(pool, district_id=mine)}
    assert seen == {"staff:AU01", "cli:root"}
    assert {r.actor for r in await search_audit(pool)} >= {"staff:AU01", "staff:AU02", "cli:root"}
