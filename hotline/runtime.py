"""Wiring: turn a Config into live resources (database URL, Redis URL, PII vault, actor).

When a URL is not configured the private servers in the data directory are started (or found
already running) so that every command, the demo and the tests work on a bare machine.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from hotline.config import Config
from store import db, embedded
from store.errors import StoreError
from store.migrate import Migration, applied_versions, discover
from store.pii import PiiVault, load_or_create_key

# The slices that own tables, in the order their first migrations were written.
MIGRATION_SLICES = ("store", "routing", "recordings", "handover", "web")
EMBEDDED_DATABASE = "hotline"


def migration_sources() -> dict[str, Path]:
    return {name: Path(str(resources.files(name) / "migrations")) for name in MIGRATION_SLICES}


def all_migrations() -> list[Migration]:
    return discover(migration_sources())


@dataclass(frozen=True)
class Runtime:
    config: Config
    database_url: str
    vault: PiiVault
    actor: str  # who the system knows: cli:<OS user of this process>
    claimed_actor: str | None = None  # HOTLINE_ACTOR, audited beside the actor, never instead


def os_actor() -> str:
    """cli:<user> from the process' real uid. Not getpass.getuser(), which believes $USER and
    $LOGNAME: anyone could name themselves through the environment."""
    uid = os.getuid()
    try:
        return f"cli:{pwd.getpwuid(uid).pw_name}"
    except KeyError:  # a uid with no passwd entry (containers)
        return f"cli:uid{uid}"


def with_database(url: str, name: str) -> str:
    """The same server, another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def ensure_database(admin_url: str, name: str) -> str:
    """Create database `name` on the server unless it exists; return its URL."""
    async with db.connection(admin_url) as conn:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


async def open_runtime(config: Config) -> Runtime:
    if config.database_url:
        database_url = config.database_url
    else:
        database_url = await ensure_database(
            embedded.ensure_postgres(config.data_dir), EMBEDDED_DATABASE
        )
    key = load_or_create_key(config.pii_key, config.data_dir)
    return Runtime(config, database_url, PiiVault.from_base64(key), os_actor(), config.actor.strip() or None)


@asynccontextmanager
async def checked_pool(database_url: str, max_size: int = 2) -> AsyncIterator[asyncpg.Pool]:
    """A pool for a command or the service, refused early when the schema is not migrated."""
    pool = await db.create_pool(database_url, max_size=max_size)
    try:
        async with pool.acquire() as conn:
            done = await applied_versions(conn)
        missing = [m for m in all_migrations() if m.version not in done]
        if missing:
            raise StoreError(
                f"the database schema is behind ({len(missing)} migration(s) not applied): "
                "run `hotline migrate` first"
            )
        yield pool
    finally:
        await pool.close()
