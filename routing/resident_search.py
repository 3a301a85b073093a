"""Finding residents by name or phone number for the console, within the viewer's scope.

A phone number is looked up by its keyed hash (it is never stored in clear); a name by its
beginning. What comes back is masked: this is a search, not a read of a record."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from routing.numbers import InvalidNumber, normalize_phone
from routing.records import PHONE
from routing.scope import Params, Scope
from store.pii import PiiVault

SEARCH_LIMIT = 50
_PHONE_LIKE = re.compile(r"[0-9+\-() ]{5,24}")


@dataclass(frozen=True)
class ResidentHit:
    id: int
    name: str
    id_number_masked: str
    sex: str
    center: str
    phones: list[str]  # masked

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "id_number": self.id_number_masked,
                "sex": self.sex, "center": self.center, "phones": self.phones}


def search_kind(text: str) -> str:
    """'phone' when the text reads as a phone number, else 'name'."""
    return "phone" if _PHONE_LIKE.fullmatch(text.strip()) else "name"


async def search_residents(conn: asyncpg.Connection, vault: PiiVault, scope: Scope, text: str, *,
                           area_code: str, limit: int = SEARCH_LIMIT) -> list[ResidentHit]:
    """Residents in scope whose phone is `text`, or whose name starts with it; [] for nothing."""
    text = text.strip()
    if not text:
        return []
    p = Params()
    if search_kind(text) == "phone":
        try:
            key = vault.lookup_hash(PHONE, normalize_phone(text, area_code))
        except InvalidNumber:
            return []
        placeholder = p.add(key)
        match = "EXISTS (SELECT 1 FROM resident_phones sp WHERE sp.resident_id = r.id AND sp.phone_hash = "
        match += placeholder + ")"
    else:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        match = f"r.name LIKE {p.add(escaped + '%')}"
    # match and the scope's predicate are constant SQL with placeholders
    sql = f"""SELECT r.id, r.name, r.id_number_masked, r.sex, ce.name AS center,
                     ARRAY(SELECT ph.phone_masked FROM resident_phones ph WHERE ph.resident_id = r.id
                           ORDER BY ph.position) AS phones
              FROM residents r JOIN centers ce ON ce.id = r.center_id
              WHERE {match} AND {scope.residents(p, 'r')}
              ORDER BY r.name, r.id LIMIT {p.add(limit)}"""  # noqa: S608
    rows = await conn.fetch(sql, *p.values)
    return [ResidentHit(r["id"], r["name"], r["id_number_masked"], r["sex"], r["center"],
                        list(r["phones"])) for r in rows]
