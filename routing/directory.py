"""Directory queries: callers, residents, staff and the roster, read from PostgreSQL.

Reads that reveal personal data in clear (a resident's phone numbers) take the actor and a
reason and write the audit row in the same transaction; listings show masked numbers only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from routing.chain import DutyShift
from routing.numbers import (
    DEFAULT_AREA_CODE,
    InvalidNumber,
    looks_like_id_number,
    looks_like_resident_id,
    normalize_phone,
    parse_id_number,
    resident_id_of,
)
from routing.people import Caller, Contract, StaffMember
from routing.records import ID_NUMBER, PHONE
from store.audit import record_read
from store.pii import PiiVault


def staff_of(row: Any) -> StaffMember:
    left_on = row["left_on"]
    if isinstance(left_on, str):  # from json_build_object
        left_on = date.fromisoformat(left_on)
    return StaffMember(
        id=row["id"], name=row["name"], role=row["role"], sip_uri=row["sip_uri"],
        center_id=row["center_id"], team_id=row["team_id"], left_on=left_on,
        district_id=row["district_id"],
    )


# The caller, every contract with its doctor, and the assistants of that doctor's team, in one
# round trip: this runs for every incoming call.
_CALLER_SQL = """
WITH caller AS (
    SELECT r.id, r.name, r.center_id, ce.district_id
    FROM resident_phones p
    JOIN residents r ON r.id = p.resident_id
    JOIN centers ce ON ce.id = r.center_id
    WHERE p.phone_hash = $1
    ORDER BY p.position, r.id
    LIMIT 1
)
SELECT caller.id, caller.name, caller.center_id, caller.district_id,
       COALESCE((
           SELECT json_agg(json_build_object(
                      'starts_on', c.starts_on, 'ends_on', c.ends_on,
                      'doctor', json_build_object(
                          'id', d.id, 'name', d.name, 'role', d.role, 'sip_uri', d.sip_uri,
                          'center_id', d.center_id, 'team_id', d.team_id, 'left_on', d.left_on,
                          'district_id', d.district_id),
                      'assistants', COALESCE((
                          SELECT json_agg(json_build_object(
                                     'id', a.id, 'name', a.name, 'role', a.role,
                                     'sip_uri', a.sip_uri, 'center_id', a.center_id,
                                     'team_id', a.team_id, 'left_on', a.left_on,
                                     'district_id', a.district_id) ORDER BY a.id)
                          FROM staff a
                          WHERE a.team_id = d.team_id AND a.role = 'assistant'), '[]'::json)
                  ) ORDER BY c.starts_on)
           FROM contracts c JOIN staff d ON d.id = c.doctor_id
           WHERE c.resident_id = caller.id), '[]'::json) AS contracts
FROM caller
"""

_ROSTER_SQL = """
SELECT s.starts_at, s.ends_at, s.center_id AS shift_center, s.district_id AS shift_district,
       s.kind, s.ring_position,
       st.id, st.name, st.role, st.sip_uri, st.center_id, st.team_id, st.left_on, st.district_id
FROM duty_shifts s JOIN staff st ON st.id = s.doctor_id
WHERE tstzrange(s.starts_at, s.ends_at) @> $1::timestamptz
"""

@dataclass(frozen=True)
class ResidentView:
    id: int
    name: str
    id_number_masked: str
    sex: str
    center: str
    team: str | None
    doctor: dict[str, Any] | None  # {staff_id, name} of the contract in force
    contract: dict[str, str] | None
    phones: list[str]  # in clear for `show` (audited), masked for `list`
    conditions: list[str]
    guardians: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "id_number": self.id_number_masked,
            "sex": self.sex, "center": self.center,
            "team": self.team, "phones": self.phones, "doctor": self.doctor,
            "contract": self.contract, "conditions": self.conditions, "guardians": self.guardians,
        }


_RESIDENT_SQL = """
SELECT r.id, r.name, r.id_number_masked, r.sex, ce.name AS center,
       t.name AS team, d.id AS doctor_id, d.name AS doctor_name, c.starts_on, c.ends_on,
       ARRAY(SELECT {phone} FROM resident_phones p WHERE p.resident_id = r.id ORDER BY p.position) AS phones,
       ARRAY(SELECT condition FROM resident_conditions rc WHERE rc.resident_id = r.id
             ORDER BY condition) AS conditions,
       COALESCE((SELECT json_agg(json_build_object('id', g.id, 'name', g.name, 'relation', gl.relation)
                                 ORDER BY g.id)
                 FROM guardians gl JOIN residents g ON g.id = gl.guardian_id
                 WHERE gl.child_id = r.id), '[]'::json) AS guardians
FROM residents r
JOIN centers ce ON ce.id = r.center_id
LEFT JOIN contracts c ON c.resident_id = r.id AND c.starts_on <= $2 AND c.ends_on >= $2
LEFT JOIN staff d ON d.id = c.doctor_id
LEFT JOIN teams t ON t.id = c.team_id
"""


class Directory:
    def __init__(self, db: asyncpg.Pool, vault: PiiVault, *, area_code: str = DEFAULT_AREA_CODE):
        self._db = db
        self._vault = vault
        # The district's area code (HOTLINE_AREA_CODE): completes local landlines, 25320001.
        self.area_code = area_code

    @property
    def db(self) -> asyncpg.Pool:
        """The pool it reads (crash recovery reads a resident by id from it)."""
        return self._db

    def normalize(self, number: str) -> str:
        """The canonical form of a number as a trunk, a person or a sheet writes it."""
        return normalize_phone(number, self.area_code)

    def phone_hash(self, number: str) -> bytes:
        return self._vault.lookup_hash(PHONE, self.normalize(number))

    async def find_caller(self, number: str) -> Caller | None:
        """The resident calling from `number` (the first holder of a shared line), or None."""
        try:
            key = self.phone_hash(number)
        except InvalidNumber:
            return None  # withheld, a SIP name, an extension: not a resident's phone
        row = await self._db.fetchrow(_CALLER_SQL, key)
        if row is None:
            return None
        contracts, assistants = [], {}
        for c in json.loads(row["contracts"]):
            doctor = staff_of(c["doctor"])
            contracts.append(Contract(doctor, date.fromisoformat(c["starts_on"]),
                                      date.fromisoformat(c["ends_on"])))
            assistants[doctor.id] = tuple(staff_of(a) for a in c["assistants"])
        return Caller(row["id"], row["name"], row["center_id"], row["district_id"],
                      tuple(contracts), assistants)

    async def roster_at(self, at: datetime) -> list[DutyShift]:
        """Who is on the roster at `at` (for checks and tests; calls use routing.snapshot)."""
        rows = await self._db.fetch(_ROSTER_SQL, at)
        return [DutyShift(staff_of(r), r["starts_at"], r["ends_at"], r["shift_center"], r["shift_district"],
                          r["kind"], r["ring_position"]) for r in rows]

    async def resident_ids(self, text: str) -> list[int]:
        """The residents a phone number, an ID-card number or `id:N` names (no clear data read,
        nothing audited); InvalidNumber for text that is none of them."""
        return await self._resident_ids_for(text)

    async def _resident_ids_for(self, number: str) -> list[int]:
        if looks_like_resident_id(number):
            rows = await self._db.fetch("SELECT id FROM residents WHERE id = $1", resident_id_of(number))
        elif looks_like_id_number(number):
            card = parse_id_number(number)
            key = self._vault.lookup_hash(ID_NUMBER, card.number)
            rows = await self._db.fetch("SELECT id FROM residents WHERE id_number_hash = $1", key)
        else:
            rows = await self._db.fetch(
                "SELECT resident_id AS id FROM resident_phones WHERE phone_hash = $1"
                " ORDER BY position, resident_id",
                self.phone_hash(number),
            )
        return [r["id"] for r in rows]

    async def show_residents(
        self, number: str, *, actor: str, reason: str, on: date, claimed_actor: str | None = None
    ) -> list[ResidentView]:
        """Residents reachable at a phone number (or with an ID-card number, or our resident id),
        phones in clear.

        Raises InvalidNumber for text that is neither. Writes one audit row per resident shown.
        """
        ids = await self._resident_ids_for(number)
        if not ids:
            return []
        sql = _RESIDENT_SQL.format(phone="p.phone_enc") + " WHERE r.id = ANY($1::bigint[])"
        async with self._db.acquire() as c:
            async with c.transaction():
                rows = await c.fetch(sql, ids, on)
                for rid in ids:
                    await record_read(c, actor=actor, action="resident.read",
                                      subject=f"resident:{rid}", reason=reason,
                                      claimed_actor=claimed_actor)
        views = {r["id"]: self._view(r, clear_phones=True) for r in rows}
        return [views[i] for i in ids if i in views]

    async def list_residents(
        self, *, center: str | None, limit: int, actor: str, on: date,
        claimed_actor: str | None = None,
    ) -> list[ResidentView]:
        """A page of residents with masked phones; the listing itself is audited once."""
        sql = _RESIDENT_SQL.format(phone="p.phone_masked") + (
            " WHERE ($1::text IS NULL OR ce.name = $1) ORDER BY r.id LIMIT $3"
        )
        async with self._db.acquire() as c:
            async with c.transaction():
                rows = await c.fetch(sql, center, on, limit)
                await record_read(c, actor=actor, action="resident.list",
                                  subject=f"center:{center or '*'}", reason=f"limit {limit}",
                                  claimed_actor=claimed_actor)
        return [self._view(r, clear_phones=False) for r in rows]

    async def center_exists(self, name: str) -> bool:
        return bool(await self._db.fetchval("SELECT 1 FROM centers WHERE name = $1", name))

    def _view(self, row: Any, *, clear_phones: bool) -> ResidentView:
        phones = [self._vault.decrypt(PHONE, p) if clear_phones else p for p in row["phones"]]
        doctor = (
            {"staff_id": row["doctor_id"], "name": row["doctor_name"]}
            if row["doctor_id"] is not None else None
        )
        contract = (
            {"starts_on": row["starts_on"].isoformat(), "ends_on": row["ends_on"].isoformat()}
            if row["starts_on"] is not None else None
        )
        return ResidentView(
            id=row["id"], name=row["name"], id_number_masked=row["id_number_masked"],
            sex=row["sex"], center=row["center"], team=row["team"],
            doctor=doctor, contract=contract, phones=phones, conditions=list(row["conditions"]),
            guardians=json.loads(row["guardians"]),
        )

