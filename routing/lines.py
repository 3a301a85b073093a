"""Hotline numbers (专属分机号, routing/migrations/0010): which number selects which district or
center, and its greeting. `hotline lines` and the console's admin pages both use these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from routing.calendar_store import Place


class LineError(Exception):
    """A line that cannot be added or removed; the message says why."""


class LineNotFound(LineError):
    pass


@dataclass(frozen=True)
class LineRow:
    number: str
    district_id: int
    district: str
    center_id: int | None
    center: str | None
    label: str
    greeting: str | None

    def as_json(self) -> dict[str, Any]:
        return {"number": self.number, "district_id": self.district_id, "district": self.district,
                "center_id": self.center_id, "center": self.center, "label": self.label,
                "greeting": self.greeting is not None}


async def list_lines(conn: asyncpg.Connection, district_id: int | None = None) -> list[LineRow]:
    rows = await conn.fetch(
        """SELECT l.number, l.label, l.greeting, l.district_id, d.name AS district,
                  l.center_id, c.name AS center
           FROM hotline_lines l JOIN districts d ON d.id = l.district_id
           LEFT JOIN centers c ON c.id = l.center_id
           WHERE ($1::integer IS NULL OR l.district_id = $1) ORDER BY l.number""", district_id)
    return [LineRow(r["number"], r["district_id"], r["district"], r["center_id"], r["center"],
                    r["label"], r["greeting"]) for r in rows]


async def add_line(conn: asyncpg.Connection, number: str, place: Place, *, label: str = "",
                   greeting: str | None = None) -> None:
    """A new hotline number for `place`; `greeting` a file already in the prompt store."""
    try:
        await conn.execute(
            "INSERT INTO hotline_lines (number, district_id, center_id, label, greeting)"
            " VALUES ($1, $2, $3, $4, $5)",
            number, place.district_id, place.center_id, label, greeting)
    except asyncpg.UniqueViolationError:
        raise LineError(f"{number} is already a hotline line (remove it first)") from None
    except asyncpg.CheckViolationError:
        raise LineError(f"{number!r} is not a dialable number (digits, letters, . _ + -; up to 32)") from None


async def remove_line(conn: asyncpg.Connection, number: str, district_id: int | None = None) -> None:
    done = await conn.execute(
        "DELETE FROM hotline_lines WHERE number = $1 AND ($2::integer IS NULL OR district_id = $2)",
        number, district_id)
    if done == "DELETE 0":
        raise LineNotFound(f"no hotline line has the number {number!r}")
