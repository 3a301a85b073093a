"""Writing directory records in bulk: encryption, lookup hashes and masks applied in one place.

The CSV importer, the demo seed and the synthetic 510 k district all write through here, with
PostgreSQL's COPY, inside the caller's transaction (so a rejected file leaves nothing behind).
Values arrive validated and normalized (routing.numbers); this module does not judge them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import asyncpg

from routing.numbers import IdCard
from store.pii import PiiVault, mask_id_number, mask_phone

PHONE = "phone"
ID_NUMBER = "id_number"
STAFF_MOBILE = "staff_mobile"


def seal_phone(vault: PiiVault, kind: str, number: str) -> tuple[bytes, bytes, str]:
    """A normalized phone number as stored: (lookup hash, ciphertext, mask)."""
    return vault.lookup_hash(kind, number), vault.encrypt(kind, number), mask_phone(number)


@dataclass(frozen=True)
class NewResident:
    name: str
    card: IdCard
    center_id: int
    phones: Sequence[str]  # normalized, first = the number the resident calls from most
    doctor_id: int | None = None
    team_id: int | None = None
    contract: tuple[date, date] | None = None
    conditions: Sequence[str] = ()


@dataclass(frozen=True)
class NewStaff:
    staff_no: str
    name: str
    role: str
    district_id: int
    center_id: int | None = None
    team_id: int | None = None
    sip_uri: str | None = None
    mobile: str | None = None  # normalized


@dataclass(frozen=True)
class NewShift:
    doctor_id: int
    district_id: int
    center_id: int | None
    starts_at: datetime
    ends_at: datetime
    kind: str = "duty"  # 'backup' rings after every duty doctor
    ring_position: int = 1  # equal positions ring together


@dataclass
class WrittenResidents:
    ids: list[int] = field(default_factory=list)  # in input order

    def by_id_hash(self, vault: PiiVault, residents: Sequence[NewResident]) -> dict[bytes, int]:
        return {vault.lookup_hash(ID_NUMBER, r.card.number): i
                for r, i in zip(residents, self.ids, strict=True)}


async def _reserve_ids(conn: asyncpg.Connection, sequence: str, n: int) -> list[int]:
    rows = await conn.fetch("SELECT nextval($1::regclass) AS id FROM generate_series(1, $2)", sequence, n)
    return [r["id"] for r in rows]


async def write_residents(
    conn: asyncpg.Connection, vault: PiiVault, residents: Sequence[NewResident]
) -> WrittenResidents:
    """COPY residents with their phones, contract and conditions; return their new ids."""
    if not residents:
        return WrittenResidents()
    ids = await _reserve_ids(conn, "residents_id_seq", len(residents))
    people, phones, contracts, conditions = [], [], [], []
    for rid, r in zip(ids, residents, strict=True):
        number = r.card.number
        people.append((rid, r.name, vault.encrypt(ID_NUMBER, number),
                       vault.lookup_hash(ID_NUMBER, number), mask_id_number(number),
                       r.card.sex, r.center_id))
        phones.extend((rid, pos, *seal_phone(vault, PHONE, p)) for pos, p in enumerate(r.phones))
        if (r.contract is None) != (r.doctor_id is None):
            # a contract is a doctor for a period: half of one is a caller's bug, not data
            raise ValueError(f"resident {r.name}: contract dates and doctor go together")
        if r.contract is not None:
            contracts.append((rid, r.doctor_id, r.team_id, r.contract[0], r.contract[1]))
        conditions.extend((rid, c) for c in dict.fromkeys(r.conditions))
    await conn.copy_records_to_table(
        "residents", records=people,
        # no birth date: it is in the encrypted ID number, and in clear it rebuilt the ID (0013)
        columns=["id", "name", "id_number_enc", "id_number_hash", "id_number_masked", "sex",
                 "center_id"],
    )
    await conn.copy_records_to_table(
        "resident_phones", records=phones,
        columns=["resident_id", "position", "phone_hash", "phone_enc", "phone_masked"],
    )
    await conn.copy_records_to_table(
        "contracts", records=contracts,
        columns=["resident_id", "doctor_id", "team_id", "starts_on", "ends_on"],
    )
    await conn.copy_records_to_table(
        "resident_conditions", records=conditions, columns=["resident_id", "condition"]
    )
    return WrittenResidents(ids)


async def link_guardians(
    conn: asyncpg.Connection, links: Sequence[tuple[int, int, str]]
) -> None:
    """(child resident id, guardian resident id, relation such as 母亲)."""
    await conn.copy_records_to_table(
        "guardians", records=list(links), columns=["child_id", "guardian_id", "relation"]
    )


async def write_staff(
    conn: asyncpg.Connection, vault: PiiVault, staff: Sequence[NewStaff]
) -> list[int]:
    if not staff:
        return []
    ids = await _reserve_ids(conn, "staff_id_seq", len(staff))
    rows = []
    for sid, s in zip(ids, staff, strict=True):
        mobile = seal_phone(vault, STAFF_MOBILE, s.mobile) if s.mobile else (None, None, None)
        rows.append((sid, s.staff_no, s.name, s.role, s.district_id, s.center_id, s.team_id,
                     s.sip_uri, *mobile))
    await conn.copy_records_to_table(
        "staff", records=rows,
        columns=["id", "staff_no", "name", "role", "district_id", "center_id", "team_id",
                 "sip_uri", "mobile_hash", "mobile_enc", "mobile_masked"],
    )
    return ids


async def write_shifts(conn: asyncpg.Connection, shifts: Sequence[NewShift]) -> None:
    await conn.copy_records_to_table(
        "duty_shifts",
        records=[(s.doctor_id, s.district_id, s.center_id, s.starts_at, s.ends_at, s.kind, s.ring_position)
                 for s in shifts],
        columns=["doctor_id", "district_id", "center_id", "starts_at", "ends_at", "kind", "ring_position"],
    )
