"""Numbered plain-SQL migrations, each applied in its own transaction and recorded.

Each slice keeps its SQL next to its code in `<slice>/migrations/NNNN_name.sql`; the numbers form
one sequence across all slices (a number used twice is an error), so the order is total. An
applied file whose text later changes is refused: fix forward with a new number instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from store.errors import MigrationError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Two service processes starting together must not both apply the same migration.
_ADVISORY_LOCK_KEY = 0x4A59_484C  # "JYHL"

_HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    slice       text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    slice: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(sources: dict[str, Path]) -> list[Migration]:
    """All migrations of the given slices ({slice name: its migrations folder}), in order."""
    found: dict[int, Migration] = {}
    for slice_name, folder in sources.items():
        for path in sorted(folder.glob("*.sql")):
            match = _NAME.match(path.name)
            if not match:
                raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
            version = int(match.group(1))
            if version in found:
                other = found[version]
                raise MigrationError(
                    f"migration {version:04d} exists twice: {other.slice}/{other.name} and "
                    f"{slice_name}/{path.name}"
                )
            found[version] = Migration(version, path.name, slice_name, path.read_text("utf-8"))
    return [found[v] for v in sorted(found)]


async def applied_versions(conn: asyncpg.Connection) -> dict[int, str]:
    await conn.execute(_HISTORY_TABLE)
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {r["version"]: r["checksum"] for r in rows}


async def migrate(conn: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply what is missing; return the migrations applied now (empty when up to date)."""
    await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
    try:
        done = await applied_versions(conn)
        for m in migrations:
            if m.version in done and done[m.version] != m.checksum:
                raise MigrationError(
                    f"{m.slice}/{m.name} was changed after it was applied; add a new migration instead"
                )
        pending = [m for m in migrations if m.version not in done]
        for m in pending:
            try:
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, slice, checksum)"
                        " VALUES ($1, $2, $3, $4)",
                        m.version, m.name, m.slice, m.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{m.slice}/{m.name} failed and was rolled back: {exc}") from None
        return pending
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
