"""`hotline promises check --since DATE [--json]`: the ledger of promises (handover/promises.py).

Exit 0 when every promise since DATE is kept, 1 with one line (or one JSON object) per broken
promise, 2 for bad input or an unreachable database.
"""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, time, timedelta
from typing import Any

from hotline.runtime import Runtime, checked_pool

EXIT_BROKEN = 1


class PromisesError(Exception):
    """Bad input to `hotline promises` (exit 2)."""


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("promises", help="the ledger of promises: callbacks, follow-ups, task histories")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="every promise since DATE kept? (exit 1 and a line per broken one)")
    check.add_argument("--since", required=True, help="first day (YYYY-MM-DD, the hotline's zone)")
    check.add_argument("--json", action="store_true", help="a JSON list of the broken promises")
    check.add_argument("--tolerance", type=float, default=60.0,
                       help="seconds the watcher may take to move a task at a change of shift (default 60)")
    check.add_argument("--at", help="judge open tasks as of this ISO 8601 instant (default: now)")


async def cmd_promises(rt: Runtime, args: argparse.Namespace) -> int:
    from handover.ownership import routing_source
    from handover.promises import check

    config = rt.config
    try:
        since = datetime.combine(date.fromisoformat(args.since), time(0), config.tz)
    except ValueError:
        raise PromisesError(f"--since: {args.since!r} is not a date (YYYY-MM-DD)") from None
    if not 0 <= args.tolerance <= 3600:
        raise PromisesError("--tolerance: from 0 to 3600 seconds")
    now = datetime.now(config.tz)
    if args.at:
        try:
            now = datetime.fromisoformat(args.at)
        except ValueError:
            raise PromisesError(f"--at: {args.at!r} is not an ISO 8601 instant") from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=config.tz)
    async with checked_pool(rt.database_url) as pool:
        broken = await check(pool, since, routing=routing_source(pool, config.tz, config.day_start,
                                                                 config.day_end),
                             tz=config.tz, now=now, tolerance=timedelta(seconds=args.tolerance))
    if args.json:
        print(json.dumps([b.as_json() for b in broken], ensure_ascii=False, indent=1))
    else:
        for b in broken:
            print(b.line())
        if not broken:
            print(f"every promise since {args.since} kept")
    return EXIT_BROKEN if broken else 0
