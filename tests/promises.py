"""`hotline promises check` after an end-to-end scenario (issue 11: "Run in the tests after every
end-to-end scenario"): the ledger the scenario left — every call no human answered with exactly
one callback task, every referral with its follow-up, every task's history and owner by the rule.

It calls handover.promises.check in the test's process rather than the `hotline` command: the
command's own arguments, output and exit codes are tested in tests/test_promises.py, and a
subprocess per scenario would cost a second or two of start-up each on a busy machine."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg

from handover.ownership import routing_source
from handover.promises import check

SH = ZoneInfo("Asia/Shanghai")


async def assert_promises_kept(pool: asyncpg.Pool, since: datetime, *, now: datetime,
                               tz: ZoneInfo = SH) -> None:
    """No broken promise in the ledger since `since` as of `now` (the scenario's clock)."""
    broken = await check(pool, since, routing=routing_source(pool, tz), tz=tz, now=now)
    assert not broken, "broken promises:\n" + "\n".join(b.line() for b in broken)
