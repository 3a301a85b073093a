"""A service node's deadline watcher in a process of its own, for tests/test_watcher_e2e.py:
`python -m tests.watcher_node DATABASE_URL CLOCK_START NODE`. The clock starts at CLOCK_START
and runs at real speed (hotline.clock.Clock, as `hotline serve` with HOTLINE_CLOCK_START).
Prints `leading NODE` when it takes the lock and `swept NODE N` after each sweep."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

from handover.ownership import routing_source
from handover.watcher import Watcher
from hotline.clock import Clock
from store import db

SH = ZoneInfo("Asia/Shanghai")


async def main(url: str, start: str, node: str) -> None:
    clock = Clock(datetime.fromisoformat(start))
    pool = await db.create_pool(url, min_size=1, max_size=4)
    watcher = Watcher(pool, url, now=clock.now, routing=routing_source(pool, SH), tz=SH,
                      sweep_s=0.3, poll_s=0.5, node=node)
    watcher.start()
    leading, swept = False, 0
    while True:
        if watcher.leading != leading:
            leading = watcher.leading
            print(f"{'leading' if leading else 'following'} {node}", flush=True)
        if watcher.sweeps != swept:
            swept = watcher.sweeps
            print(f"swept {node} {swept}", flush=True)
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
