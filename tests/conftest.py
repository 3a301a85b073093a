"""Real PostgreSQL and Redis for every test: private servers started once per test session.

Each test gets a fresh database cloned from a migrated template (fast, and isolates tests) and a
flushed Redis. Set HOTLINE_TEST_DATABASE_URL (an admin URL to a PostgreSQL that may create
databases) to run against another server instead of the embedded one.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from hotline.runtime import all_migrations, with_database
from store import db, embedded
from store.migrate import migrate
from store.pii import PiiVault

# Kamailio, sipp and baresip fixtures for the SIP tests; the console and a real Chromium for the
# console's tests.
pytest_plugins = ["tests.sip_peers", "tests.softphone", "tests.console", "tests.browser"]

ROOT = Path(__file__).resolve().parent.parent
TEST_PII_KEY = base64.b64encode(bytes(range(32))).decode()
TEMPLATE_DB = "hotline_test_template"
_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("servers")
    yield path
    embedded.stop_postgres(path)
    embedded.stop_redis(path)


@pytest.fixture(scope="session")
def pg_admin_url(servers_dir: Path) -> str:
    return os.environ.get("HOTLINE_TEST_DATABASE_URL") or embedded.ensure_postgres(servers_dir)


@pytest.fixture(scope="session")
async def template_url(pg_admin_url: str) -> str:
    async with db.connection(pg_admin_url) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        await conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    url = with_database(pg_admin_url, TEMPLATE_DB)
    async with db.connection(url) as conn:
        await migrate(conn, all_migrations())
    return url


@asynccontextmanager
async def scratch_database(admin_url: str, prefix: str, template: str | None = None) -> AsyncIterator[str]:
    """A database of its own for one test, dropped afterwards (open connections and all)."""
    name = f"{prefix}_{os.getpid()}_{next(_db_numbers)}"
    clone = f' TEMPLATE "{template}"' if template else ""
    async with db.connection(admin_url) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"{clone}')
    try:
        yield with_database(admin_url, name)
    finally:
        await drop_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    """Drop a scratch database, retrying on a fresh connection if the server drops ours.

    Rarely (about one SIP test run in twenty) the admin connection is closed under
    `DROP DATABASE ... WITH (FORCE)` while the server terminates the test's own sessions; the drop
    itself is idempotent, so a second try on a new connection finishes the job.
    """
    for attempt in range(3):
        try:
            async with db.connection(admin_url) as conn:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, OSError):
            if attempt == 2:
                raise
            await asyncio.sleep(0.5)


@pytest.fixture
async def database_url(pg_admin_url: str, template_url: str) -> AsyncIterator[str]:
    async with scratch_database(pg_admin_url, "hotline_test", TEMPLATE_DB) as url:
        yield url


@pytest.fixture
async def empty_database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A database with no schema at all, for migration tests."""
    async with scratch_database(pg_admin_url, "hotline_empty") as url:
        yield url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, max_size=4)
    yield p
    await p.close()


@pytest.fixture
async def private_postgres(tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    """A migrated PostgreSQL of the test's own, for tests that stop it (the session's server is
    shared and must never be stopped): its data directory and the URL of its database."""
    data_dir = tmp_path / "pg"
    try:
        admin = await asyncio.to_thread(embedded.ensure_postgres, data_dir)
        async with db.connection(admin) as conn:
            await conn.execute("CREATE DATABASE outage")
        url = with_database(admin, "outage")
        async with db.connection(url) as conn:
            await migrate(conn, all_migrations())
        yield data_dir, url
    finally:
        await asyncio.to_thread(embedded.stop_postgres, data_dir)


@pytest.fixture(scope="session")
def vault() -> PiiVault:
    return PiiVault.from_base64(TEST_PII_KEY)


@pytest.fixture(scope="session")
def redis_url(servers_dir: Path) -> str:
    return os.environ.get("HOTLINE_TEST_REDIS_URL") or embedded.ensure_redis(servers_dir)


@pytest.fixture
async def redis(redis_url: str):
    from store.redis import connect_redis

    client = await connect_redis(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(
        HOTLINE_DATABASE_URL=database_url,
        HOTLINE_PII_KEY=TEST_PII_KEY,
        HOTLINE_DATA_DIR=str(tmp_path / "data"),
        HOTLINE_LOG_FORMAT="json",
        HOTLINE_ACTOR="test:cli",
    )
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `hotline` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "hotline", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )
