"""Migrations, the PII vault and the embedded servers, against real PostgreSQL and Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotline.runtime import all_migrations
from store import db, embedded
from store.errors import MigrationError, StoreUnavailable
from store.migrate import discover, migrate
from store.pii import PiiKeyError, PiiVault, mask_id_number, mask_phone
from store.redis import connect_redis


async def test_migrations_apply_from_empty_and_are_idempotent(empty_database_url: str) -> None:
    async with db.connection(empty_database_url) as conn:
        first = await migrate(conn, all_migrations())
        assert [m.version for m in first] == [m.version for m in all_migrations()]
        assert await migrate(conn, all_migrations()) == []
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        recorded = await conn.fetchval("SELECT count(*) FROM schema_migrations")
    assert {"residents", "resident_phones", "staff", "duty_shifts", "audit_log"} <= tables
    assert recorded == len(all_migrations())


async def test_failed_migration_rolls_back_and_is_not_recorded(
    empty_database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0901_good.sql").write_text("CREATE TABLE good (id int);")
    (folder / "0902_bad.sql").write_text("CREATE TABLE half (id int); SELECT * FROM no_such_table;")
    async with db.connection(empty_database_url) as conn:
        with pytest.raises(MigrationError, match="0902_bad.sql failed and was rolled back"):
            await migrate(conn, discover({"test": folder}))
        assert await conn.fetchval("SELECT to_regclass('good') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('half') IS NULL")
        assert await conn.fetchval("SELECT array_agg(version) FROM schema_migrations") == [901]


async def test_a_changed_applied_migration_is_refused(empty_database_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0901_one.sql").write_text("CREATE TABLE one (id int);")
    async with db.connection(empty_database_url) as conn:
        await migrate(conn, discover({"test": folder}))
        (folder / "0901_one.sql").write_text("CREATE TABLE one (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, discover({"test": folder}))


def test_migration_numbers_are_unique_across_slices(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "0001_x.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="exists twice"):
        discover({"a": tmp_path / "a", "b": tmp_path / "b"})
    (tmp_path / "a" / "7_bad name.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        discover({"a": tmp_path / "a"})


async def test_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(StoreUnavailable, match=r"cannot reach PostgreSQL at 127\.0\.0\.1:1/x: Connection refused"):
        await db.connect("postgresql://u@127.0.0.1:1/x")


async def test_unreachable_redis_is_one_clear_error() -> None:
    with pytest.raises(StoreUnavailable, match=r"cannot reach Redis at 127\.0\.0\.1:1/0: Connection refused"):
        await connect_redis("redis://127.0.0.1:1/0")


async def test_embedded_redis_is_a_real_server_reused_across_starts(redis, servers_dir: Path) -> None:
    await redis.set("presence:1", "available", ex=30)
    # a second "command" finds the same server instead of starting another
    url = embedded.ensure_redis(servers_dir)
    other = await connect_redis(url)
    try:
        assert await other.get("presence:1") == b"available"
        assert 0 < await other.ttl("presence:1") <= 30
    finally:
        await other.aclose()


def test_vault_round_trip_and_keyed_hash(vault: PiiVault) -> None:
    blob = vault.encrypt("id_number", "11010519491231002X")
    assert b"11010519491231002X" not in blob
    assert vault.decrypt("id_number", blob) == "11010519491231002X"
    # fresh nonce each time, same lookup hash each time
    assert vault.encrypt("id_number", "11010519491231002X") != blob
    assert vault.lookup_hash("phone", "13812345678") == vault.lookup_hash("phone", "13812345678")
    assert vault.lookup_hash("phone", "13812345678") != vault.lookup_hash("id_number", "13812345678")
    # a ciphertext cannot be replayed as another kind, nor read with another key
    with pytest.raises(PiiKeyError):
        vault.decrypt("phone", blob)
    with pytest.raises(PiiKeyError, match="wrong PII key"):
        PiiVault(bytes(32)).decrypt("id_number", blob)
    other = PiiVault(bytes(32))
    assert other.lookup_hash("phone", "13812345678") != vault.lookup_hash("phone", "13812345678")


def test_bad_pii_key_is_refused() -> None:
    with pytest.raises(PiiKeyError, match="base64"):
        PiiVault.from_base64("not base64!")
    with pytest.raises(PiiKeyError, match="32 bytes"):
        PiiVault.from_base64("c2hvcnQ=")


def test_masks() -> None:
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("02225321234") == "022****1234"
    assert mask_id_number("11010519491231002X") == "1101*************X"
    assert mask_id_number("1101051949") == "**********"  # a short mistyped value, masked whole


async def test_a_connection_released_mid_transaction_comes_back_clean(database_url: str) -> None:
    from store import db

    pool = await db.create_pool(database_url, max_size=1)
    try:
        await pool.execute("CREATE TABLE leaked (x int)")
        conn = await pool.acquire()
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO leaked VALUES (1)")
        await pool.release(conn)  # a bug forgot to commit or roll back
        async with pool.acquire() as again:
            assert not again.is_in_transaction()
            assert await again.fetchval("SELECT count(*) FROM leaked") == 0
    finally:
        await pool.close()
