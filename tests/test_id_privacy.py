"""No ID number can be narrowed to fewer than 1 000 candidates from what is shown without the key
(issue 9 §5, reproduction 11): for every resident of the demo district, everything the database
holds in clear, `residents list`, `residents show` and the masked forms, put together.

An 18-character ID number is region (6 digits) + birth date (8) + sequence (3; the last digit's
parity is the sex) + a check character computed from the 17 others. The count below takes the
attacker to know the region (the district's), and uses every hard constraint the shown data give:
the visible characters of the mask, the sex, a birth date or year if one is shown, and the birth
lying on or before the start of any contract and, for a child with guardians, within 18 years.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from routing.directory import Directory
from routing.numbers import _ID_CHECK, _ID_WEIGHTS, id_check_char, parse_id_number
from routing.records import ID_NUMBER
from routing.seed import seed_demo
from store.pii import PiiVault, mask_id_number
from tests.conftest import run_cli

TODAY = date(2026, 11, 20)
ENOUGH = 1_000
OLDEST = 120  # years: the earliest birth date an attacker need consider

# Everything shown about a resident, and what the count does with it. A field not named here
# fails the test until the count accounts for it: a new clear column or JSON field is exactly how
# a leak comes back.
DB_COLUMNS = {"id", "name", "id_number_masked", "sex", "center_id", "created_at"}
SHOWN_FIELDS = {"id", "name", "id_number", "sex", "center", "team", "phones", "doctor", "contract",
                "conditions", "guardians"}
DATE_FIELDS = {"birth_date", "birth_year"}  # understood by the count, should one come back


def _seq_residues(mask: str, sex: str) -> Counter[int]:
    """Weighted sums mod 11 of the sequence codes (positions 14–16) the mask and sex allow."""
    residues: Counter[int] = Counter()
    for seq in range(1000):
        digits = f"{seq:03d}"
        if int(digits[2]) % 2 != (sex == "M"):
            continue
        if any(m != "*" and m != d for m, d in zip(mask[14:17], digits, strict=True)):
            continue
        residues[sum(int(d) * w for d, w in zip(digits, _ID_WEIGHTS[14:17], strict=True)) % 11] += 1
    return residues


def count_candidates(region: str, mask: str, sex: str, earliest: date, latest: date,
                     stop_at: int | None = None) -> int:
    """ID numbers with this region and sex, born earliest…latest, that the mask fits."""
    if len(mask) != 18 or any(m != "*" and m != r for m, r in zip(mask[:6], region, strict=True)):
        return 0
    residues = _seq_residues(mask, sex)
    total_seq = sum(residues.values())
    region_sum = sum(int(d) * w for d, w in zip(region, _ID_WEIGHTS[:6], strict=True))
    count = 0
    day = latest
    while day >= earliest:
        digits = f"{day:%Y%m%d}"
        if all(m == "*" or m == d for m, d in zip(mask[6:14], digits, strict=True)):
            partial = region_sum + sum(int(d) * w for d, w in zip(digits, _ID_WEIGHTS[6:14], strict=True))
            if mask[17] == "*":
                count += total_seq
            else:
                wanted = _ID_CHECK.index(mask[17])
                count += residues[(wanted - partial) % 11]
        if stop_at is not None and count >= stop_at:
            return count
        day -= timedelta(days=1)
    return count


def test_the_count_finds_reproduction_11() -> None:
    """The old mask (first four, last four) with the birth date in clear: one candidate."""
    first17 = "120116" + "19480312" + "024"
    number = first17 + id_check_char(first17)
    old_mask = number[:4] + "*" * 10 + number[-4:]
    born = date(1948, 3, 12)
    assert count_candidates("120116", old_mask, "F", born, born) == 1
    # and a brute force over the same space agrees with the residue count
    brute = sum(1 for seq in range(0, 1000, 1) if seq % 2 == 0
                for cand in [f"120116{born:%Y%m%d}{seq:03d}"]
                if (cand + id_check_char(cand))[-4:] == number[-4:])
    assert brute == 1
    # what is shown now, even with that birth date known exactly, leaves far more
    assert count_candidates("120116", mask_id_number(number), "F", born, born) == \
        sum(1 for seq in range(0, 1000, 2) if id_check_char(f"120116{born:%Y%m%d}{seq:03d}") == number[-1])


@pytest.fixture
async def demo(pool: asyncpg.Pool, vault: PiiVault) -> None:
    await seed_demo(pool, vault, today=TODAY, tz=ZoneInfo("Asia/Shanghai"))


async def test_no_demo_resident_is_narrowed_below_1000_candidates(
        demo: None, pool: asyncpg.Pool, vault: PiiVault, cli_env: dict[str, str]) -> None:
    # 1. the database in clear (a dump without the key)
    columns = {r["column_name"] for r in await pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'residents'")}
    clear = {c for c in columns if not c.endswith(("_enc", "_hash"))}
    assert clear <= DB_COLUMNS | DATE_FIELDS, f"new clear column(s) {clear - DB_COLUMNS}: count them here"
    # column names from the catalogue, checked against DB_COLUMNS above: no user text
    rows = {r["id"]: dict(r) for r in await pool.fetch(f"SELECT {', '.join(sorted(clear))} FROM residents")}  # noqa: S608
    contract_starts = {r["resident_id"]: r["first"] for r in await pool.fetch(
        "SELECT resident_id, min(starts_on) AS first FROM contracts GROUP BY resident_id")}
    children = {r["child_id"] for r in await pool.fetch("SELECT child_id FROM guardians")}

    # 2. the listing, as the CLI prints it
    listed = run_cli(cli_env, "residents", "list", "--limit", "1000", "--json")
    assert listed.returncode == 0, listed.stderr
    shown = {v["id"]: v for v in json.loads(listed.stdout)}
    assert set(shown) == set(rows)

    # 3. `residents show` of every resident (the CLI's code path, in process: 300 subprocesses
    # would take minutes), merged over the listing
    directory = Directory(pool, vault)
    for rid in rows:
        (view,) = await directory.show_residents(str(rid), actor="test", reason="privacy test", on=TODAY)
        shown[rid] = {**shown[rid], **{k: v for k, v in view.as_json().items() if k != "phones"}}

    fewest = None
    for rid, row in rows.items():
        fields = shown[rid]
        assert set(fields) <= SHOWN_FIELDS | DATE_FIELDS, f"new field(s) {set(fields) - SHOWN_FIELDS}: count them here"
        number = vault.decrypt(ID_NUMBER, await pool.fetchval(
            "SELECT id_number_enc FROM residents WHERE id = $1", rid))
        card = parse_id_number(number)
        masks = {row["id_number_masked"], fields["id_number"]}
        assert len(masks) == 1, masks  # the listing shows the stored mask, nothing more
        (mask,) = masks
        earliest, latest = TODAY.replace(year=TODAY.year - OLDEST), TODAY
        for known in (row.get("birth_date"), fields.get("birth_date")):
            if known is not None:
                known = date.fromisoformat(str(known))
                earliest, latest = max(earliest, known), min(latest, known)
        for year in (row.get("birth_year"), fields.get("birth_year")):
            if year is not None:
                earliest, latest = max(earliest, date(int(year), 1, 1)), min(latest, date(int(year), 12, 31))
        if rid in contract_starts:  # nobody has a contract before they are born
            latest = min(latest, contract_starts[rid])
        if rid in children:  # a guardian is named: take it the resident is a minor
            earliest = max(earliest, TODAY.replace(year=TODAY.year - 18))
        assert earliest <= card.birth_date <= latest  # the constraints are true ones
        n = count_candidates(number[:6], mask, fields["sex"], earliest, latest, stop_at=ENOUGH)
        assert n >= ENOUGH, (rid, fields["name"], mask, earliest, latest, n)
        fewest = n if fewest is None else min(fewest, n)
    assert fewest is not None and len(rows) == 300
