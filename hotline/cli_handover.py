"""`hotline handover build`: the night's handover sheets, for operators and tests (the deadline
watcher builds them itself when a night shift ends)."""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

from hotline.cli_common import EXIT_ERROR, NotFound
from hotline.clock import Clock
from hotline.runtime import Runtime, checked_pool


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("handover", help="the night handover (夜间交班): build a night's sheets")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="build (again: only what is new is added) the sheets of "
                                             "a shift, or of every shift that began on a date")
    which = build.add_mutually_exclusive_group(required=True)
    which.add_argument("--shift", type=int, help="a duty shift's id (roster list shows them)")
    which.add_argument("--night", type=date.fromisoformat, help="YYYY-MM-DD: the date the night began")


async def cmd_handover(rt: Runtime, args: argparse.Namespace) -> int:
    from handover.night_handover import HandoverError, NightHandover

    async with checked_pool(rt.database_url) as pool:
        handover = NightHandover(pool, tz=rt.config.tz)
        clock = Clock(rt.config.clock_start_at)  # a moved clock (demo, tests) builds as of its time
        shifts = [args.shift] if args.shift is not None else await handover.shifts_of_night(args.night)
        if not shifts:
            raise NotFound(f"no duty shift began on {args.night}")
        for shift in shifts:
            try:
                built = await handover.build_sheet(shift, clock.now())
            except HandoverError as exc:
                if exc.code == "no_shift":
                    raise NotFound(f"no duty shift {shift}") from None
                print(f"hotline: shift {shift}: {exc}")
                return EXIT_ERROR
            print(f"shift {shift}: {len(built.sheet_ids)} sheet(s), {built.items_added} new item(s), "
                  f"{built.tasks_opened} handover task(s) opened")
    return 0
