"""Staff accounts of the console (web/accounts.py) over a real PostgreSQL and Redis."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from argon2 import PasswordHasher, Type
from argon2.exceptions import VerifyMismatchError
from structlog.testing import capture_logs

from routing.scope import Viewer
from store.pii import PiiVault
from tests.district import District, build_district
from web.accounts import (
    LOCK_FOR,
    MAX_FAILURES,
    ONE_TIME_CODE_ALPHABET,
    Accounts,
    NoSuchStaff,
    PasswordRejected,
    SignIn,
    WrongPassword,
)

PASSWORD = "绿茶-green-tea-42"
OTHER = "another-pass-7781"
NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


class CountingHasher(PasswordHasher):
    """Cheap parameters (tests hash a lot), and a count of verifications: the unknown-account
    path must do the same work as a known one."""

    def __init__(self, **kwargs: int):
        super().__init__(**{"time_cost": 1, "memory_cost": 8, "parallelism": 1, **kwargs})
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
        self.verified += 1
        return super().verify(hash, password)


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    return await build_district(pool, vault, week_of=date.today())


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def accounts(pool: asyncpg.Pool, redis, hasher: CountingHasher) -> Accounts:
    return Accounts(pool, redis, hasher=hasher)


async def account_row(pool: asyncpg.Pool, staff_id: int) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM staff_accounts WHERE staff_id = $1", staff_id)


def address(n: int) -> str:
    return f"192.0.2.{n}"


async def test_the_stored_hash_is_argon2id_never_the_password(
        pool: asyncpg.Pool, redis, district: District) -> None:
    real = Accounts(pool, redis)  # the production hasher
    assert real.hasher.type is Type.ID
    with capture_logs() as logs:
        await real.set_password(district.doctor_id, PASSWORD, actor="test:admin")
        assert (await real.sign_in("D001", PASSWORD, address(1), NOW)).status == "ok"
    row = await account_row(pool, district.doctor_id)
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    assert real.hasher.verify(row["password_hash"], PASSWORD)
    assert row["must_change"] is False and row["password_changed_at"] is not None
    everything_stored = " ".join(str(v) for v in row.values()) + " ".join(
        str(v) for r in await pool.fetch("SELECT * FROM audit_log") for v in r.values())
    assert PASSWORD not in everything_stored
    assert logs and PASSWORD not in repr(logs)


async def test_right_and_wrong_password(accounts: Accounts, pool: asyncpg.Pool,
                                        district: District) -> None:
    await accounts.set_password(district.doctor_id, PASSWORD, actor="test:admin")
    assert await accounts.sign_in("D001", PASSWORD, address(1), NOW) == SignIn(
        "ok", staff_id=district.doctor_id)
    assert (await account_row(pool, district.doctor_id))["last_sign_in_at"] == NOW
    assert await accounts.sign_in("D001", PASSWORD + "x", address(1), NOW) == SignIn("bad")
    assert await accounts.sign_in("D001", "", address(1), NOW) == SignIn("bad")
    assert await accounts.sign_in("D001", "x" * 100_000, address(1), NOW) == SignIn("bad")
    assert (await account_row(pool, district.doctor_id))["failed_count"] == 3
    # a success clears the count
    assert (await accounts.sign_in(" D001 ", PASSWORD, address(1), NOW)).status == "ok"
    assert (await account_row(pool, district.doctor_id))["failed_count"] == 0


async def test_an_unknown_account_answers_like_a_wrong_password_after_the_same_work(
        accounts: Accounts, hasher: CountingHasher, district: District) -> None:
    await accounts.set_password(district.doctor_id, PASSWORD, actor="test:admin")
    await accounts.set_password(district.assistant_id, PASSWORD, actor="test:admin")
    hasher.verified = 0
    wrong = await accounts.sign_in("D001", "wrong-password-1", address(1), NOW)
    assert hasher.verified == 1
    # no such number, a staff member with no account, a number no one could have
    for n, staff_no in enumerate(("ZZ9999", "G001", "' OR 1=1 --", "")):
        hasher.verified = 0
        answer = await accounts.sign_in(staff_no, "wrong-password-1", address(10 + n), NOW)
        assert answer == wrong == SignIn("bad")
        assert hasher.verified == 1, staff_no
    # and after five tries an unknown account "locks" like a real one
    for n in range(MAX_FAILURES):
        real = await accounts.sign_in("A001", "wrong-password-1", address(20 + n), NOW)
        fake = await accounts.sign_in("ZZ8888", "wrong-password-1", address(30 + n), NOW)
        assert real == fake == SignIn("bad")
    hasher.verified = 0
    real = await accounts.sign_in("A001", "wrong-password-1", address(40), NOW)
    fake = await accounts.sign_in("ZZ8888", "wrong-password-1", address(41), NOW)
    assert hasher.verified == 0  # neither is checked while locked
    assert real.status == fake.status == "locked"
    assert real.locked_until == fake.locked_until == NOW + LOCK_FOR


async def test_five_failures_lock_the_account_for_15_minutes_even_for_the_right_password(
        accounts: Accounts, pool: asyncpg.Pool, database_url: str, district: District) -> None:
    await accounts.set_password(district.doctor_id, PASSWORD, actor="test:admin")
    # a different address every time: only the account's own lock is at work here
    for n in range(MAX_FAILURES - 1):
        assert (await accounts.sign_in("D001", "nope-nope-nope", address(n), NOW)).status == "bad"
    assert (await account_row(pool, district.doctor_id))["locked_until"] is None
    fifth = NOW + timedelta(minutes=1)
    assert (await accounts.sign_in("D001", "nope-nope-nope", address(9), fifth)).status == "bad"
    until = fifth + LOCK_FOR
    assert (await account_row(pool, district.doctor_id))["locked_until"] == until

    during = await accounts.sign_in("D001", PASSWORD, address(50), until - timedelta(seconds=1))
    assert during == SignIn("locked", locked_until=until)
    # the lock is in PostgreSQL: another node (another Accounts, another pool) sees it
    other_pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        other = Accounts(other_pool, accounts.redis, hasher=accounts.hasher)
        assert (await other.sign_in("D001", PASSWORD, address(51), fifth)).status == "locked"
    finally:
        await other_pool.close()
    after = await accounts.sign_in("D001", PASSWORD, address(52), until)
    assert after == SignIn("ok", staff_id=district.doctor_id)
    row = await account_row(pool, district.doctor_id)
    assert row["locked_until"] is None and row["failed_count"] == 0


async def test_five_failures_from_one_address_lock_it_across_accounts(
        accounts: Accounts, district: District) -> None:
    for staff_id in (district.doctor_id, district.assistant_id, district.agent_id):
        await accounts.set_password(staff_id, PASSWORD, actor="test:admin")
    sprayer = address(66)
    for staff_no in ("D001", "A001", "ZZ0001", "ZZ0002", "N001"):  # one try per account
        assert (await accounts.sign_in(staff_no, "password-spray", sprayer, NOW)).status == "bad"
    locked = await accounts.sign_in("G001", PASSWORD, sprayer, NOW + timedelta(minutes=1))
    assert locked == SignIn("locked", locked_until=NOW + LOCK_FOR)
    # the accounts themselves are not locked: from elsewhere they sign in
    assert (await accounts.sign_in("G001", PASSWORD, address(67), NOW)).status == "ok"
    assert (await accounts.sign_in("D001", PASSWORD, address(67), NOW)).status == "ok"
    later = NOW + LOCK_FOR
    assert (await accounts.sign_in("G001", PASSWORD, sprayer, later)).status == "ok"


async def test_a_one_time_code_signs_in_only_to_set_a_new_password(
        accounts: Accounts, pool: asyncpg.Pool, district: District) -> None:
    await accounts.set_password(district.doctor_id, PASSWORD, actor="test:admin")
    code = await accounts.issue_one_time_code(district.doctor_id, actor="test:admin", now=NOW)
    assert len(code) == 10 and set(code) <= set(ONE_TIME_CODE_ALPHABET)
    row = await account_row(pool, district.doctor_id)
    assert row["must_change"] and row["one_time_code_hash"].startswith("$argon2id$")
    assert code not in row["one_time_code_hash"]
    assert row["one_time_code_expires_at"] == NOW + timedelta(days=3)
    # a reset: the old password no longer signs in
    assert (await accounts.sign_in("D001", PASSWORD, address(1), NOW)).status == "bad"
    assert await accounts.sign_in("D001", code, address(1), NOW) == SignIn(
        "must_change", staff_id=district.doctor_id)

    await accounts.set_password(district.doctor_id, OTHER, actor="staff:D001")
    row = await account_row(pool, district.doctor_id)
    assert not row["must_change"] and row["one_time_code_hash"] is None
    assert row["one_time_code_expires_at"] is None
    assert (await accounts.sign_in("D001", code, address(1), NOW)).status == "bad"
    assert (await accounts.sign_in("D001", OTHER, address(1), NOW)).status == "ok"
    audit = await pool.fetch("SELECT actor, action, subject FROM audit_log ORDER BY id")
    assert [tuple(r) for r in audit] == [
        ("test:admin", "account.password_set", "staff:D001"),
        ("test:admin", "account.one_time_code_issued", "staff:D001"),
        ("staff:D001", "account.password_set", "staff:D001"),
    ]


async def test_an_expired_one_time_code_is_refused(accounts: Accounts, district: District) -> None:
    code = await accounts.issue_one_time_code(district.assistant_id, actor="test:admin", now=NOW,
                                              valid_for=timedelta(days=3))
    assert (await accounts.sign_in("A001", code, address(1), NOW + timedelta(days=2))).status \
        == "must_change"
    expired = NOW + timedelta(days=3)
    assert await accounts.sign_in("A001", code, address(2), expired) == SignIn("bad")


@pytest.mark.parametrize(("password", "rule"), [
    ("short-pw", "至少 10 个字符"),
    ("12345678901234", "全是数字"),
    ("zx20260001", "工号"),
    ("Password123", "常见"),
    ("qwertyuiop", "常见"),
    ("x" * 257, "最多 256"),
])
async def test_the_password_policy(accounts: Accounts, pool: asyncpg.Pool, district: District,
                                   password: str, rule: str) -> None:
    await pool.execute("UPDATE staff SET staff_no = 'ZX20260001' WHERE id = $1", district.doctor_id)
    with pytest.raises(PasswordRejected, match=rule) as refused:
        await accounts.set_password(district.doctor_id, password, actor="test:admin")
    assert " / " in str(refused.value)  # Chinese / English
    assert await account_row(pool, district.doctor_id) is None
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_staff_who_have_left_cannot_sign_in(accounts: Accounts, pool: asyncpg.Pool,
                                                  district: District) -> None:
    await accounts.set_password(district.doctor_id, PASSWORD, actor="test:admin")
    today = NOW.astimezone(accounts.tz).date()
    await pool.execute("UPDATE staff SET left_on = $1 WHERE id = $2", today + timedelta(days=1),
                       district.doctor_id)
    assert (await accounts.sign_in("D001", PASSWORD, address(1), NOW)).status == "ok"
    await pool.execute("UPDATE staff SET left_on = $1 WHERE id = $2", today, district.doctor_id)
    assert await accounts.sign_in("D001", PASSWORD, address(2), NOW) == SignIn("bad")
    # the long-departed doctor of the test district: no account can be made
    with pytest.raises(NoSuchStaff, match="left on"):
        await accounts.set_password(district.departed_doctor_id, PASSWORD, actor="test:admin")
    with pytest.raises(NoSuchStaff):
        await accounts.issue_one_time_code(district.departed_doctor_id, actor="test:admin")
    with pytest.raises(NoSuchStaff):
        await accounts.set_password(999_999, PASSWORD, actor="test:admin")


async def test_changing_ones_own_password(accounts: Accounts, pool: asyncpg.Pool,
                                          district: District) -> None:
    await accounts.set_password(district.doctor_id, PASSWORD, actor="test:admin")
    first_change = (await account_row(pool, district.doctor_id))["password_changed_at"]
    with pytest.raises(WrongPassword):
        await accounts.change_password(district.doctor_id, "not-the-password", OTHER,
                                       actor="staff:D001")
    assert (await account_row(pool, district.doctor_id))["failed_count"] == 1  # counted
    with pytest.raises(PasswordRejected, match="常见"):
        await accounts.change_password(district.doctor_id, PASSWORD, "password123",
                                       actor="staff:D001")
    with pytest.raises(PasswordRejected, match="相同"):
        await accounts.change_password(district.doctor_id, PASSWORD, PASSWORD, actor="staff:D001")
    assert (await accounts.sign_in("D001", PASSWORD, address(1), NOW)).status == "ok"

    await accounts.change_password(district.doctor_id, PASSWORD, OTHER, actor="staff:D001")
    assert (await accounts.sign_in("D001", PASSWORD, address(1), NOW)).status == "bad"
    assert (await accounts.sign_in("D001", OTHER, address(1), NOW)).status == "ok"
    changed = await accounts.password_changed_at(district.doctor_id)
    assert changed is not None and changed > first_change
    assert await pool.fetchval(
        "SELECT actor FROM audit_log WHERE action = 'account.password_changed'") == "staff:D001"
    with pytest.raises(WrongPassword):  # no account at all
        await accounts.change_password(district.agent_id, PASSWORD, OTHER, actor="staff:G001")


async def test_a_hash_with_old_parameters_is_replaced_at_sign_in(
        pool: asyncpg.Pool, redis, district: District) -> None:
    old = Accounts(pool, redis, hasher=CountingHasher(time_cost=1))
    await old.set_password(district.doctor_id, PASSWORD, actor="test:admin")
    before = (await account_row(pool, district.doctor_id))["password_hash"]
    new = Accounts(pool, redis, hasher=CountingHasher(time_cost=2))
    assert new.hasher.check_needs_rehash(before)
    assert (await new.sign_in("D001", PASSWORD, address(1), NOW)).status == "ok"
    after = (await account_row(pool, district.doctor_id))["password_hash"]
    assert after != before and not new.hasher.check_needs_rehash(after)
    assert new.hasher.verify(after, PASSWORD)
    with pytest.raises(VerifyMismatchError):
        new.hasher.verify(after, OTHER)
    assert (await new.sign_in("D001", PASSWORD, address(1), NOW)).status == "ok"


async def test_the_viewer_of_a_staff_member(accounts: Accounts, pool: asyncpg.Pool,
                                            district: District) -> None:
    viewer = await accounts.viewer(district.doctor_id)
    assert viewer == Viewer(staff_id=district.doctor_id, staff_no="D001", name="王医生",
                            role="family_doctor", district_id=district.district_id,
                            center_id=district.center_id, team_id=district.team_id)
    assert viewer.actor == "staff:D001"
    assert await accounts.viewer(district.departed_doctor_id) is None
    assert await accounts.viewer(999_999) is None


async def test_without_redis_the_account_lock_still_holds(pool: asyncpg.Pool,
                                                          hasher: CountingHasher,
                                                          district: District) -> None:
    import redis.asyncio as aioredis

    gone = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1)
    try:
        accounts = Accounts(pool, gone, hasher=hasher)
        await accounts.set_password(district.doctor_id, PASSWORD, actor="test:admin")
        assert (await accounts.sign_in("D001", PASSWORD, address(1), NOW)).status == "ok"
        assert (await accounts.sign_in("ZZ9999", PASSWORD, address(1), NOW)).status == "bad"
        for _ in range(MAX_FAILURES):
            assert (await accounts.sign_in("D001", "nope-nope-nope", address(1), NOW)).status \
                == "bad"
        assert (await accounts.sign_in("D001", PASSWORD, address(1), NOW)).status == "locked"
    finally:
        await gone.aclose()
