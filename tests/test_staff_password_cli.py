"""`hotline staff password BH0001` (hotline/cli_accounts.py) and the demo's console logins.

The prompts are answered through a pseudo-terminal that is the command's controlling terminal,
as a person at a terminal answers them: getpass reads /dev/tty, not standard input.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pwd
import select
import subprocess
import sys
import termios
import time
from datetime import UTC, date, datetime

import asyncpg
import pytest

from store.pii import PiiVault
from tests.conftest import ROOT, run_cli
from tests.district import District, build_district
from web.accounts import DEMO_LOGINS, DEMO_PASSWORD, Accounts

PASSWORD = "绿茶-green-tea-42"
ME = "cli:" + pwd.getpwuid(os.getuid()).pw_name


class Terminal:
    """`hotline …` run with a pseudo-terminal as its controlling terminal and standard streams."""

    def __init__(self, env: dict[str, str], *args: str):
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hotline", *args], env=env, cwd=ROOT,
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            # the new session's controlling terminal: what getpass opens as /dev/tty
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.seen = b""

    def expect(self, text: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} within {timeout_s:g} s; saw {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready and not self._read():
                raise AssertionError(f"the command ended before {text!r}; saw {self.output!r}")

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def finish(self, timeout_s: float = 60) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready and not self._read() and self.proc.poll() is not None:
                break
            if not ready and self.proc.poll() is not None:
                break
        os.close(self.master)
        return self.proc.wait(timeout=max(deadline - time.monotonic(), 1))

    def _read(self) -> bool:
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: the other side is closed
            return False
        self.seen += chunk
        return bool(chunk)

    @property
    def output(self) -> str:
        return self.seen.decode(errors="replace")


def typed(env: dict[str, str], staff_no: str, first: str, second: str) -> Terminal:
    term = Terminal(env, "staff", "password", staff_no)
    term.expect("new console password: ")
    term.type(first)
    term.expect("again: ")
    term.type(second)
    return term


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    return await build_district(pool, vault, week_of=date.today())


def accounts_of(pool: asyncpg.Pool, redis) -> Accounts:
    return Accounts(pool, redis)


async def test_the_password_is_typed_twice_never_echoed(
        district: District, cli_env: dict[str, str], pool: asyncpg.Pool, redis) -> None:
    term = await asyncio.to_thread(typed, cli_env, "D001", PASSWORD, PASSWORD)
    assert await asyncio.to_thread(term.finish) == 0, term.output
    assert "王医生 (D001): console password set" in term.output
    assert PASSWORD not in term.output  # not echoed
    now = datetime.now(UTC)
    signed = await accounts_of(pool, redis).sign_in("D001", PASSWORD, "192.0.2.1", now)
    assert (signed.status, signed.staff_id) == ("ok", district.doctor_id)
    audit = await pool.fetch("SELECT actor, claimed_actor, action, subject FROM audit_log")
    assert [tuple(r) for r in audit] == [(ME, "test:cli", "account.password_set", "staff:D001")]
    stored = await pool.fetchval("SELECT password_hash FROM staff_accounts")
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


async def test_two_different_passwords_change_nothing(
        district: District, cli_env: dict[str, str], pool: asyncpg.Pool) -> None:
    term = await asyncio.to_thread(typed, cli_env, "D001", PASSWORD, PASSWORD + "!")
    assert await asyncio.to_thread(term.finish) == 2
    assert "hotline: error: the two passwords differ; nothing changed" in term.output
    assert PASSWORD not in term.output
    assert await pool.fetchval("SELECT count(*) FROM staff_accounts") == 0
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_a_weak_password_is_refused_with_the_rule(
        district: District, cli_env: dict[str, str], pool: asyncpg.Pool) -> None:
    term = await asyncio.to_thread(typed, cli_env, "D001", "1234567890", "1234567890")
    assert await asyncio.to_thread(term.finish) == 2
    assert "password refused, nothing changed: 密码不能全是数字 / not only digits" in term.output
    assert await pool.fetchval("SELECT count(*) FROM staff_accounts") == 0


async def test_unknown_or_departed_staff_and_no_terminal(
        district: District, cli_env: dict[str, str], pool: asyncpg.Pool) -> None:
    unknown = await asyncio.to_thread(run_cli, cli_env, "staff", "password", "XX9999")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "hotline: no staff member has the number 'XX9999'"
    departed = await asyncio.to_thread(run_cli, cli_env, "staff", "password", "D002")
    assert departed.returncode == 1 and "D002 has left" in departed.stderr
    # no terminal to type into (stdin is not a tty) and no --password-stdin: refused, no prompt
    piped = await asyncio.to_thread(run_cli, cli_env, "staff", "password", "D001")
    assert piped.returncode == 2 and "use --password-stdin" in piped.stderr
    assert await pool.fetchval("SELECT count(*) FROM staff_accounts") == 0


async def test_password_from_stdin(district: District, cli_env: dict[str, str],
                                   pool: asyncpg.Pool, redis) -> None:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "hotline", "staff", "password", "A001",
                         "--password-stdin"], input=PASSWORD + "\n", env=cli_env, cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    signed = await accounts_of(pool, redis).sign_in("A001", PASSWORD, "192.0.2.1",
                                                    datetime.now(UTC))
    assert signed.status == "ok"


async def test_a_one_time_code_is_printed_and_forces_a_new_password(
        district: District, cli_env: dict[str, str], pool: asyncpg.Pool, redis) -> None:
    done = await asyncio.to_thread(run_cli, cli_env, "staff", "password", "D001",
                                   "--one-time-code")
    assert done.returncode == 0, done.stderr
    code = done.stdout.split("one-time code ", 1)[1].split()[0]
    assert len(code) == 10
    accounts = accounts_of(pool, redis)
    signed = await accounts.sign_in("D001", code, "192.0.2.1", datetime.now(UTC))
    assert (signed.status, signed.staff_id) == ("must_change", district.doctor_id)
    assert await pool.fetchval("SELECT action FROM audit_log") == "account.one_time_code_issued"
    assert code not in (await pool.fetchval("SELECT one_time_code_hash FROM staff_accounts"))


async def test_the_demo_seed_gives_known_console_logins(
        cli_env: dict[str, str], pool: asyncpg.Pool, redis) -> None:
    seeded = await asyncio.to_thread(run_cli, cli_env, "seed", "demo")
    assert seeded.returncode == 0, seeded.stderr
    accounts = accounts_of(pool, redis)
    now = datetime.now(UTC)
    roles = []
    for n, (staff_no, role, _what) in enumerate(DEMO_LOGINS):
        assert f"console login {staff_no} / {DEMO_PASSWORD}: " in seeded.stdout
        signed = await accounts.sign_in(staff_no, DEMO_PASSWORD, f"192.0.2.{n}", now)
        assert signed.status == "ok", staff_no
        viewer = await accounts.viewer(signed.staff_id)
        assert viewer is not None and viewer.role == role
        roles.append(role)
    assert set(roles) == {"district_admin", "supervisor", "director", "family_doctor",
                          "night_doctor", "agent"}
    # seeding again keeps a password someone changed
    admin = await accounts.staff_id_of("BH0036")
    await accounts.set_password(admin, PASSWORD, actor="test")
    again = await asyncio.to_thread(run_cli, cli_env, "seed", "demo", "--if-missing")
    assert again.returncode == 0, again.stderr
    assert f"console login BH0036 / {DEMO_PASSWORD} (unless changed since)" in again.stdout
    assert (await accounts.sign_in("BH0036", PASSWORD, "192.0.2.99", now)).status == "ok"
