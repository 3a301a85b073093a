"""The district administrator's view of the staff directory: the list, and changes to a staff
member's role, extension (SIP URI) and team. Reads take a Scope (routing/scope.py) like every
console query; a change names its district so nobody edits another district's staff."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from routing.scope import ROLES, Params, Scope

# What a softphone's address may look like: sip:1001@pbx.example or sips:…, port optional.
SIP_URI = re.compile(r"sips?:[A-Za-z0-9_.+-]{1,64}@[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")
_EXTENSION = re.compile(r"sips?:([^@;:]+)@")
LIST_LIMIT = 500


class StaffError(Exception):
    """A change to a staff member that cannot be made; the message says why (in Chinese: the
    console shows it as is)."""


class StaffNotFound(StaffError):
    pass


class StaffConflict(StaffError):
    pass


@dataclass(frozen=True)
class StaffRow:
    id: int
    staff_no: str
    name: str
    role: str
    center_id: int | None
    center: str | None
    team_id: int | None
    team: str | None
    sip_uri: str | None
    left_on: date | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "staff_no": self.staff_no, "name": self.name, "role": self.role,
                "center_id": self.center_id, "center": self.center, "team_id": self.team_id,
                "team": self.team, "sip_uri": self.sip_uri, "left_on": self.left_on}


_STAFF_SQL = """
SELECT s.id, s.staff_no, s.name, s.role, s.center_id, ce.name AS center, s.team_id, t.name AS team,
       s.sip_uri, s.left_on
FROM staff s LEFT JOIN centers ce ON ce.id = s.center_id LEFT JOIN teams t ON t.id = s.team_id
"""


def _row(r: Any) -> StaffRow:
    return StaffRow(r["id"], r["staff_no"], r["name"], r["role"], r["center_id"], r["center"],
                    r["team_id"], r["team"], r["sip_uri"], r["left_on"])


async def list_staff(conn: asyncpg.Connection, scope: Scope, *, query: str = "",
                     limit: int = LIST_LIMIT) -> list[StaffRow]:
    """Staff in scope, by 工号; `query` matches the start of the name or the 工号."""
    p = Params()
    where = scope.staff(p, "s")
    if query:
        prefix = p.add(query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        where += f" AND (s.name LIKE {prefix} OR s.staff_no LIKE {prefix})"
    # where: the scope's predicate and constant SQL with placeholders, no user text
    sql = _STAFF_SQL + f" WHERE {where} ORDER BY s.staff_no LIMIT {p.add(limit)}"  # noqa: S608
    return [_row(r) for r in await conn.fetch(sql, *p.values)]


async def staff_member(conn: asyncpg.Connection, scope: Scope, staff_no: str) -> StaffRow | None:
    p = Params(staff_no)
    sql = _STAFF_SQL + f" WHERE s.staff_no = $1 AND {scope.staff(p, 's')}"  # noqa: S608 (scope fragment)
    row = await conn.fetchrow(sql, *p.values)
    return _row(row) if row else None


_UNSET: Any = object()


async def update_staff(conn: asyncpg.Connection, scope: Scope, staff_no: str, *,
                       role: str = _UNSET, sip_uri: str | None = _UNSET,
                       team_id: int | None = _UNSET) -> tuple[StaffRow, StaffRow]:
    """Change what is given (a field left out stays); returns (before, after).

    A team brings its center with it; no team keeps the center. Two people who have not left
    cannot share an extension: a call for one would ring the other."""
    async with conn.transaction():
        before = await staff_member(conn, scope, staff_no)
        if before is None:
            raise StaffNotFound(f"没有工号为 {staff_no} 的员工")
        fields: dict[str, Any] = {}
        if role is not _UNSET:
            if role not in ROLES:
                raise StaffError(f"未知角色：{role}")
            fields["role"] = role
        if sip_uri is not _UNSET:
            sip_uri = (sip_uri or "").strip() or None
            if sip_uri is not None:
                if not SIP_URI.fullmatch(sip_uri):
                    raise StaffError(f"分机地址格式不正确：{sip_uri}（例如 sip:1001@pbx）")
                extension = _EXTENSION.match(sip_uri)
                assert extension is not None
                other = await conn.fetchrow(
                    "SELECT staff_no, name FROM staff WHERE id <> $1 AND sip_extension(sip_uri) = $2"
                    " AND (left_on IS NULL OR left_on > current_date)", before.id, extension.group(1))
                if other is not None:
                    raise StaffConflict(f"分机 {extension.group(1)} 已属于 {other['name']}（{other['staff_no']}）")
            fields["sip_uri"] = sip_uri
        if team_id is not _UNSET:
            if team_id is not None:
                team = await conn.fetchrow(
                    "SELECT t.id, t.center_id FROM teams t JOIN centers ce ON ce.id = t.center_id"
                    " WHERE t.id = $1 AND ce.district_id = $2", team_id, scope.viewer.district_id)
                if team is None:
                    raise StaffError(f"本区没有编号为 {team_id} 的团队")
                fields["center_id"] = team["center_id"]
            fields["team_id"] = team_id
        if fields:
            names = list(fields)
            # column names come from the fixed keys above, never from the request
            sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
            await conn.execute(f"UPDATE staff SET {sets} WHERE id = $1",  # noqa: S608
                               before.id, *(fields[n] for n in names))
        after = await staff_member(conn, scope, staff_no)
        assert after is not None
    return before, after


async def district_places(conn: asyncpg.Connection, district_id: int) -> tuple[list[Any], list[Any]]:
    """The district's centers and teams (id, name, center), for the admin's choices."""
    centers = await conn.fetch("SELECT id, name FROM centers WHERE district_id = $1 ORDER BY id",
                               district_id)
    teams = await conn.fetch(
        "SELECT t.id, t.name, ce.name AS center FROM teams t JOIN centers ce ON ce.id = t.center_id"
        " WHERE ce.district_id = $1 ORDER BY ce.id, t.id", district_id)
    return list(centers), list(teams)
