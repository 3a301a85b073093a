"""One rule for every `hotline` command: what the command names does not exist → exit 1;
bad input, an unreachable server or a refused change → exit 2; one line on stderr, no traceback."""

from __future__ import annotations

from datetime import date

import asyncpg
import pytest

from store.pii import PiiVault
from tests.conftest import run_cli
from tests.district import District, build_district

NOT_FOUND, BAD = 1, 2


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    return await build_district(pool, vault, week_of=date(2026, 11, 22))


CASES = [
    # not found: 1
    (["residents", "show", "13912345678"], NOT_FOUND, "no resident has the number 139****5678"),
    (["residents", "show", "999999"], NOT_FOUND, "no resident has the id 999999"),
    (["residents", "list", "--center", "无此中心"], NOT_FOUND, "no center named '无此中心'"),
    (["staff", "leave", "BH9999", "--from", "2026-12-01", "--to", "2026-12-05"], NOT_FOUND,
     "no staff member has the number 'BH9999'"),
    (["staff", "leave", "D001", "--from", "2026-12-01", "--to", "2026-12-05", "--cancel"], NOT_FOUND,
     "王医生 has no leave starting on 2026-12-01"),
    (["roster", "swap", "--at", "2026-11-24T21:00", "--from", "BH9999", "--to", "D001"], NOT_FOUND,
     "no staff member has the number 'BH9999'"),
    (["roster", "swap", "--at", "2026-11-24T12:00", "--from", "N001", "--to", "D001"], NOT_FOUND,
     "赵医生 (N001) has no shift at"),
    (["lines", "remove", "9999"], NOT_FOUND, "no hotline line has the number '9999'"),
    (["lines", "add", "8009", "--center", "无此中心"], NOT_FOUND, "no center named '无此中心'"),
    (["route", "--caller", "13800000001", "--line", "9999"], NOT_FOUND, "'9999' is not a hotline line"),
    (["calendar", "reopen", "2026-12-01"], NOT_FOUND, "is not closed on 2026-12-01"),
    (["calendar", "close", "2026-12-01", "--reason", "培训", "--center", "无此中心"], NOT_FOUND,
     "no center named '无此中心'"),
    # bad input: 2
    (["residents", "show", "abc"], BAD, "phone number 'abc' has characters other than digits"),
    (["residents", "list", "--limit", "0"], BAD, "--limit must be at least 1"),
    (["route", "--caller", "abc"], BAD, "--caller: phone number 'abc' has characters"),
    (["route", "--caller", "13800000001", "--at", "tomorrow"], BAD, "--at: cannot read 'tomorrow'"),
    (["staff", "leave", "D001", "--from", "someday", "--to", "2026-12-05"], BAD, "--from: 'someday' is not a date"),
    (["roster", "check", "--days", "0"], BAD, "--days: from 1 to 366"),
    (["roster", "swap", "--at", "2026-11-24T21:00", "--from", "N001", "--to", "A001"], BAD, "not a doctor"),
    (["lines", "add", "80 02"], BAD, "is not a dialable number"),
    (["calendar", "show", "1800"], BAD, "'1800' is not a year"),
    (["import", "residents", "/nonexistent/residents.csv"], BAD, "there is no such file"),
]


@pytest.mark.parametrize(("args", "code", "message"), CASES, ids=[" ".join(c[0][:3]) for c in CASES])
async def test_exit_codes_are_the_same_for_every_command(district: District, cli_env: dict[str, str],
                                                         args: list[str], code: int, message: str) -> None:
    result = run_cli(cli_env, *args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    # one line for the operator (JSON log lines of the run aside)
    said = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    assert said[0].startswith("hotline: "), result.stderr
    if args[0] != "import":  # a rejected file lists its problems under the first line
        assert len(said) == 1, result.stderr


@pytest.mark.parametrize("args", [["residents", "list"], ["route", "--caller", "13800000001"],
                                  ["staff", "leave", "D001", "--from", "2026-12-01", "--to", "2026-12-02"],
                                  ["lines", "list"]])
async def test_an_unreachable_database_is_exit_2(cli_env: dict[str, str], args: list[str]) -> None:
    env = dict(cli_env, HOTLINE_DATABASE_URL="postgresql://hotline:pw@127.0.0.1:1/hotline")
    result = run_cli(env, *args)
    assert result.returncode == BAD
    assert result.stderr.strip() == "hotline: error: cannot reach PostgreSQL at 127.0.0.1:1/hotline: Connection refused"
