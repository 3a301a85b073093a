"""Staff accounts of the console: passwords, one-time codes, sign-in throttling.

One account per staff row (table staff_accounts, migration 0019). Only argon2id hashes are
stored. An account has one usable credential at a time: its password, or after a reset a
one-time code that signs in only to choose a new password (status 'must_change').

Throttling, both sides of a password-guessing attack:
- an account: 5 failed sign-ins lock it for 15 minutes. Kept in PostgreSQL, so the lock survives
  a restart and holds on every node;
- an address: 5 failed sign-ins from one address, whatever the accounts, lock the address for 15
  minutes. Kept in Redis (it spans accounts, and is cheap to expire), so one address spraying a
  common password over many accounts is stopped after five tries.

No account enumeration: an unknown staff number, a staff member who has left and an account
without a password cost one argon2 verification like a known one and answer 'bad' exactly like
a wrong password; after five tries they answer 'locked' too, as a real account would.

Times come from the caller (`now`), so tests move the clock; Redis keys also get a real TTL that
only cleans them up: whether an address is locked is decided by the instant stored in the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from redis.exceptions import RedisError

from routing.scope import Viewer
from store.audit import record_read

log = structlog.get_logger("web.accounts")

MAX_FAILURES = 5
LOCK_FOR = timedelta(minutes=15)
ONE_TIME_CODE_VALID_FOR = timedelta(days=3)
# No 0/O, 1/I/L, 2/Z, 5/S, 8/B: read aloud or from a note without mistakes.
ONE_TIME_CODE_ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"
ONE_TIME_CODE_LENGTH = 10
MIN_PASSWORD_LENGTH = 10
# argon2 accepts anything, but hashing megabytes on request is a denial of service.
MAX_PASSWORD_LENGTH = 256
DEFAULT_TZ = ZoneInfo("Asia/Shanghai")

# The passwords tried first by anyone guessing (lower-cased), among those long enough to pass the
# length rule.
COMMON_PASSWORDS = frozenset({
    "1234567890", "0123456789", "12345678910", "1234567890a", "a1234567890", "qwertyuiop",
    "qwertyuiop123", "1qaz2wsx3edc", "1q2w3e4r5t", "1q2w3e4r5t6y", "q1w2e3r4t5", "qazwsxedcrfv",
    "asdfghjkl;", "zxcvbnm123", "password12", "password123", "password1234", "passw0rd123",
    "p@ssw0rd123", "p@ssword123", "iloveyou123", "abc1234567", "abcd123456", "abcdefghij",
    "abc123456789", "aa123456789", "aaaaaaaaaa", "woaini1314", "woaini520", "woaini123456",
    "admin12345", "admin123456", "administrator", "welcome123", "letmein123", "changeme123",
    "football123", "sunshine123", "princess123", "dragon1234", "monkey1234", "baseball123",
    "superman123", "trustno1234", "hotline123", "hotline1234", "jiayi12345", "jiayi123456",
    "12345qwert", "qwert12345", "123456abcd", "123456qwer", "123qweasdzxc", "qweasdzxc123",
    "zaq12wsxcde", "1qazxsw23edc",
})

_ADDRESS_FAILURES = "hotline:signin:address:failures:"
_ADDRESS_LOCK = "hotline:signin:address:lock:"
_UNKNOWN_FAILURES = "hotline:signin:unknown:failures:"
_UNKNOWN_LOCK = "hotline:signin:unknown:lock:"

# One failure counted and, at the limit, the lock set, atomically across nodes.
# KEYS[1] counter, KEYS[2] lock; ARGV[1] limit, ARGV[2] locked-until (epoch s),
# ARGV[3] window / lock TTL (ms). Returns the locked-until instant, or 0.
_COUNT_FAILURE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
if n >= tonumber(ARGV[1]) then
    redis.call('DEL', KEYS[1])
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
    return ARGV[2]
end
return 0
"""

SignInStatus = Literal["ok", "must_change", "bad", "locked"]


@dataclass(frozen=True)
class SignIn:
    """The answer to a sign-in. `staff_id` only for 'ok' and 'must_change' (then the console opens
    a session: for 'must_change' one that can only set a new password); `locked_until` only for
    'locked'."""

    status: SignInStatus
    staff_id: int | None = None
    locked_until: datetime | None = None


class AccountError(Exception):
    """An account change that cannot be made; the message says why."""


class NoSuchStaff(AccountError):
    """No staff member has that id or number, or she has left."""


class PasswordRejected(AccountError):
    """A new password breaks the policy; the message (Chinese / English) says which rule."""


class WrongPassword(AccountError):
    """The current password given to change it is wrong (or the account is locked)."""


def password_problem(password: str, staff_no: str) -> str | None:
    """Why `password` may not be used by `staff_no`, or None when it may."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"密码至少 {MIN_PASSWORD_LENGTH} 个字符 / at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"密码最多 {MAX_PASSWORD_LENGTH} 个字符 / at most {MAX_PASSWORD_LENGTH} characters"
    if password.isdigit():
        return "密码不能全是数字 / not only digits"
    if password.strip().casefold() == staff_no.strip().casefold():
        return "密码不能与工号相同 / not the staff number"
    if password.strip().casefold() in COMMON_PASSWORDS:
        return "密码太常见，请换一个 / too common a password"
    return None


def new_one_time_code() -> str:
    return "".join(secrets.choice(ONE_TIME_CODE_ALPHABET) for _ in range(ONE_TIME_CODE_LENGTH))


def _key_part(text: str) -> str:
    """A fixed-size Redis key part for text from the network (addresses, staff numbers)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Accounts:
    """Staff accounts over the pool (accounts, audit) and Redis (the per-address throttle).

    `hasher` defaults to argon2-cffi's PasswordHasher (argon2id, its recommended parameters);
    a stored hash made with other parameters is rehashed at the next successful sign-in."""

    def __init__(self, pool: asyncpg.Pool, redis: Any, *, hasher: PasswordHasher | None = None,
                 tz: ZoneInfo = DEFAULT_TZ):
        self.pool = pool
        self.redis = redis
        self.hasher = hasher or PasswordHasher()
        self.tz = tz
        self._dummy_hash: str | None = None

    # -- hashing, off the event loop: argon2 takes tens of milliseconds of CPU and 64 MiB ----

    async def _hash(self, secret: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, secret)

    async def _verify(self, stored: str | None, secret: str) -> bool:
        """Whether `secret` matches `stored`; with no stored hash, the same work for nothing."""
        if stored is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
            stored = self._dummy_hash
            secret = secret + "\x00"  # can never match the random dummy
        try:
            return await asyncio.to_thread(self.hasher.verify, stored, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    # -- sign-in ------------------------------------------------------------------------------

    async def sign_in(self, staff_no: str, password: str, address: str, now: datetime) -> SignIn:
        """Check a staff number and a password (or a one-time code) from `address` at `now`."""
        staff_no = staff_no.strip()
        address_locked = await self._locked(_ADDRESS_LOCK + _key_part(address), now)
        if address_locked is not None:
            log.warning("account.sign_in", outcome="address_locked", staff_no=staff_no[:32],
                        address=address)
            return SignIn("locked", locked_until=address_locked)

        today = now.astimezone(self.tz).date()
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                """SELECT s.id, s.left_on, a.password_hash, a.must_change, a.one_time_code_hash,
                          a.one_time_code_expires_at, a.locked_until
                   FROM staff s JOIN staff_accounts a ON a.staff_id = s.id
                   WHERE s.staff_no = $1""", staff_no)
        if row is None or _gone(row["left_on"], today):
            return await self._unknown(staff_no, password, address, now)

        if row["locked_until"] is not None and row["locked_until"] > now:
            await self._count_address_failure(address, now)
            log.warning("account.sign_in", outcome="account_locked", staff_id=row["id"],
                        address=address)
            return SignIn("locked", locked_until=row["locked_until"])

        too_long = len(password) > MAX_PASSWORD_LENGTH
        with_code = row["one_time_code_hash"] is not None
        stored = row["one_time_code_hash"] if with_code else row["password_hash"]
        matches = await self._verify(None if too_long else stored, password[:MAX_PASSWORD_LENGTH])
        if with_code and matches and row["one_time_code_expires_at"] <= now:
            matches = False  # an expired code: a wrong credential like any other
        if not matches:
            return await self._failed(row["id"], address, now)

        rehash = None
        if not with_code and self.hasher.check_needs_rehash(row["password_hash"]):
            rehash = await self._hash(password)
        async with self.pool.acquire() as conn:
            await conn.execute(
                """UPDATE staff_accounts SET failed_count = 0, locked_until = NULL,
                          last_sign_in_at = $2, password_hash = coalesce($3, password_hash)
                   WHERE staff_id = $1""", row["id"], now, rehash)
        status: SignInStatus = "must_change" if with_code or row["must_change"] else "ok"
        log.info("account.sign_in", outcome=status, staff_id=row["id"], address=address,
                 rehashed=rehash is not None)
        return SignIn(status, staff_id=row["id"])

    async def _failed(self, staff_id: int, address: str, now: datetime) -> SignIn:
        """A wrong credential for a known account: counted, and the fifth locks it (then the
        count starts again, so after the lock the account gets five more tries)."""
        async with self.pool.acquire() as conn:
            locked_until = await conn.fetchval(
                """UPDATE staff_accounts SET
                          failed_count = CASE WHEN failed_count + 1 >= $2 THEN 0
                                              ELSE failed_count + 1 END,
                          locked_until = CASE WHEN failed_count + 1 >= $2 THEN $3::timestamptz
                                              ELSE locked_until END
                   WHERE staff_id = $1 RETURNING locked_until""",
                staff_id, MAX_FAILURES, now + LOCK_FOR)
        await self._count_address_failure(address, now)
        locked = locked_until is not None and locked_until > now
        log.warning("account.sign_in", outcome="bad", staff_id=staff_id, address=address,
                    now_locked=locked)
        return SignIn("bad")

    async def _unknown(self, staff_no: str, password: str, address: str, now: datetime) -> SignIn:
        """An unknown staff number (or one who left, or has no account): the same work and the
        same answers as a real account, including its lock after five tries."""
        key = _key_part(staff_no)
        phantom_locked = await self._locked(_UNKNOWN_LOCK + key, now)
        log.warning("account.sign_in", outcome="unknown", staff_no=staff_no[:32], address=address)
        if phantom_locked is not None:  # a locked account does no verification either
            await self._count_address_failure(address, now)
            return SignIn("locked", locked_until=phantom_locked)
        await self._verify(None, password[:MAX_PASSWORD_LENGTH])
        await self._count_address_failure(address, now)
        await self._count_failure(_UNKNOWN_FAILURES + key, _UNKNOWN_LOCK + key, now)
        return SignIn("bad")

    # -- the Redis side of the throttle ----------------------------------------------------

    async def _locked(self, lock_key: str, now: datetime) -> datetime | None:
        """Until when the lock at `lock_key` holds at `now`, or None. Without Redis the address
        throttle is off (the account locks in PostgreSQL still hold): logged, not fatal."""
        try:
            value = await self.redis.get(lock_key)
        except RedisError as exc:
            log.warning("account.throttle_unavailable", error=str(exc))
            return None
        if value is None:
            return None
        until = datetime.fromtimestamp(float(value), UTC)
        return until if until > now else None

    async def _count_address_failure(self, address: str, now: datetime) -> None:
        key = _key_part(address)
        locked = await self._count_failure(_ADDRESS_FAILURES + key, _ADDRESS_LOCK + key, now)
        if locked:
            log.warning("account.address_locked", address=address)

    async def _count_failure(self, counter_key: str, lock_key: str, now: datetime) -> bool:
        """Count one failure; True when it set the lock."""
        until = now + LOCK_FOR
        try:
            result = await self.redis.eval(
                _COUNT_FAILURE, 2, counter_key, lock_key, MAX_FAILURES,
                repr(until.timestamp()), int(LOCK_FOR.total_seconds() * 1000))
        except RedisError as exc:
            log.warning("account.throttle_unavailable", error=str(exc))
            return False
        return result not in (0, b"0", "0")

    # -- changing credentials ----------------------------------------------------------------

    async def set_password(self, staff_id: int, new_password: str, *, actor: str,
                           claimed_actor: str | None = None) -> None:
        """Give the account this password (creating the account if needed): PasswordRejected
        when it breaks the policy, NoSuchStaff when there is nobody (still employed) by that id.
        Clears a one-time code, must_change, the failure count and any lock; audited (with the
        CLI's HOTLINE_ACTOR claim beside the actor, when given)."""
        await self._store_password(staff_id, new_password, actor=actor,
                                   action="account.password_set", claimed_actor=claimed_actor)

    async def change_password(self, staff_id: int, old_password: str, new_password: str, *,
                              actor: str) -> None:
        """The signed-in staff member's own change: the current password first (a wrong one
        counts as a failed sign-in, so a stolen session cannot guess it), then as set_password."""
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT password_hash, locked_until FROM staff_accounts WHERE staff_id = $1",
                staff_id)
        if row is None:
            raise WrongPassword("当前密码不正确 / the current password is wrong")
        if row["locked_until"] is not None and row["locked_until"] > now:
            raise WrongPassword("账号已锁定，请稍后再试 / the account is locked; try again later")
        too_long = len(old_password) > MAX_PASSWORD_LENGTH
        if not await self._verify(None if too_long else row["password_hash"],
                                  old_password[:MAX_PASSWORD_LENGTH]):
            async with self.pool.acquire() as conn:
                await conn.execute(
                    """UPDATE staff_accounts SET
                              failed_count = CASE WHEN failed_count + 1 >= $2 THEN 0
                                                  ELSE failed_count + 1 END,
                              locked_until = CASE WHEN failed_count + 1 >= $2
                                                  THEN $3::timestamptz ELSE locked_until END
                       WHERE staff_id = $1""", staff_id, MAX_FAILURES, now + LOCK_FOR)
            log.warning("account.password_change_refused", staff_id=staff_id, actor=actor)
            raise WrongPassword("当前密码不正确 / the current password is wrong")
        if new_password == old_password:
            raise PasswordRejected("新密码不能与当前密码相同 / the new password is the current one")
        await self._store_password(staff_id, new_password, actor=actor,
                                   action="account.password_changed")

    async def _store_password(self, staff_id: int, new_password: str, *, actor: str,
                              action: str, claimed_actor: str | None = None) -> None:
        person = await self._person(staff_id)
        problem = password_problem(new_password, person["staff_no"])
        if problem:
            raise PasswordRejected(problem)
        password_hash = await self._hash(new_password)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO staff_accounts (staff_id, password_hash, password_changed_at)
                   VALUES ($1, $2, now())
                   ON CONFLICT (staff_id) DO UPDATE SET
                       password_hash = excluded.password_hash, must_change = false,
                       one_time_code_hash = NULL, one_time_code_expires_at = NULL,
                       password_changed_at = excluded.password_changed_at,
                       failed_count = 0, locked_until = NULL""",
                staff_id, password_hash)
            await record_read(conn, actor=actor, action=action,
                              subject=f"staff:{person['staff_no']}", claimed_actor=claimed_actor)
        log.info(action, staff_id=staff_id, actor=actor)

    async def issue_one_time_code(self, staff_id: int, *, actor: str,
                                  valid_for: timedelta = ONE_TIME_CODE_VALID_FOR,
                                  now: datetime | None = None,
                                  claimed_actor: str | None = None) -> str:
        """A fresh one-time code for a first sign-in or a reset: it replaces the password (the
        old one no longer signs in), signs in only to set a new one, and expires. Audited; the
        code itself is returned once and stored hashed."""
        person = await self._person(staff_id)
        code = new_one_time_code()
        code_hash = await self._hash(code)
        expires = (now or datetime.now(UTC)) + valid_for
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO staff_accounts (staff_id, must_change, one_time_code_hash,
                                               one_time_code_expires_at)
                   VALUES ($1, true, $2, $3)
                   ON CONFLICT (staff_id) DO UPDATE SET
                       password_hash = NULL, must_change = true,
                       one_time_code_hash = excluded.one_time_code_hash,
                       one_time_code_expires_at = excluded.one_time_code_expires_at,
                       failed_count = 0, locked_until = NULL""",
                staff_id, code_hash, expires)
            await record_read(conn, actor=actor, action="account.one_time_code_issued",
                              subject=f"staff:{person['staff_no']}",
                              reason=f"valid until {expires.isoformat(timespec='minutes')}",
                              claimed_actor=claimed_actor)
        log.info("account.one_time_code_issued", staff_id=staff_id, actor=actor)
        return code

    # -- who is signed in ----------------------------------------------------------------------

    async def viewer(self, staff_id: int) -> Viewer | None:
        """The staff member as the scope sees her; None when there is none or she has left."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                """SELECT id, staff_no, name, role, district_id, center_id, team_id, left_on
                   FROM staff WHERE id = $1""", staff_id)
        if row is None or _gone(row["left_on"], datetime.now(self.tz).date()):
            return None
        return Viewer(staff_id=row["id"], staff_no=row["staff_no"], name=row["name"],
                      role=row["role"], district_id=row["district_id"],
                      center_id=row["center_id"], team_id=row["team_id"])

    async def password_changed_at(self, staff_id: int) -> datetime | None:
        """When the password was last set: sessions opened before it are over."""
        async with self.pool.acquire() as conn:
            changed: datetime | None = await conn.fetchval(
                "SELECT password_changed_at FROM staff_accounts WHERE staff_id = $1", staff_id)
        return changed

    async def staff_id_of(self, staff_no: str) -> int:
        """The id of the staff member with this number: NoSuchStaff when none."""
        async with self.pool.acquire() as conn:
            staff_id: int | None = await conn.fetchval(
                "SELECT id FROM staff WHERE staff_no = $1", staff_no.strip())
        if staff_id is None:
            raise NoSuchStaff(f"no staff member has the number {staff_no!r}")
        return staff_id

    async def _person(self, staff_id: int) -> asyncpg.Record:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT staff_no, name, left_on FROM staff WHERE id = $1", staff_id)
        if row is None:
            raise NoSuchStaff(f"no staff member has the id {staff_id}")
        if _gone(row["left_on"], datetime.now(self.tz).date()):
            raise NoSuchStaff(f"{row['name']} ({row['staff_no']}) left on {row['left_on']}")
        return row


def _gone(left_on: date | None, today: date) -> bool:
    return left_on is not None and left_on <= today


# The demo district's console logins (`hotline seed demo`, routing/seed.py's staff order): one
# per kind of viewer, all with DEMO_PASSWORD; the demo banner shows the first two. Staff numbers
# and roles are checked at seeding.
DEMO_PASSWORD = "jiayi-demo"
DEMO_LOGINS: tuple[tuple[str, str, str], ...] = (
    ("BH0036", "district_admin", "区管理员"),
    ("BH0001", "family_doctor", "北塘街一团队家庭医生（张桂兰的医生），分机 1001"),
    ("BH0030", "supervisor", "质控（北塘街）"),
    ("BH0033", "director", "北塘街中心主任"),
    ("BH0017", "night_doctor", "北塘街夜间值班医生，分机 3001"),
    ("BH0025", "agent", "北塘街客服，分机 4001"),
)


async def ensure_demo_accounts(pool: asyncpg.Pool, *, actor: str) -> list[tuple[str, str, str]]:
    """Give the demo logins DEMO_PASSWORD, except those that have an account already (a password
    someone changed stays). Returns (staff_no, role, what) of those set now."""
    accounts = Accounts(pool, None)
    done = []
    async with pool.acquire() as conn:
        rows = {r["staff_no"]: r for r in await conn.fetch(
            """SELECT s.id, s.staff_no, s.role, a.staff_id IS NOT NULL AS has_account
               FROM staff s LEFT JOIN staff_accounts a ON a.staff_id = s.id
               WHERE s.staff_no = ANY($1::text[])""", [no for no, _, _ in DEMO_LOGINS])}
    for staff_no, role, what in DEMO_LOGINS:
        row = rows.get(staff_no)
        if row is None or row["role"] != role:
            raise AccountError(f"demo login {staff_no}: expected a {role} in the demo district")
        if not row["has_account"]:
            await accounts.set_password(row["id"], DEMO_PASSWORD, actor=actor)
            done.append((staff_no, role, what))
    return done
