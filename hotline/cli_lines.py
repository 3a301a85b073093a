"""`hotline lines`: the numbers residents dial (专属分机号), and whose chain and greeting each selects."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import asyncpg

from hotline.cli_common import NotFound
from hotline.runtime import Runtime, checked_pool
from routing.calendar_store import (
    CalendarError,
    CalendarNotFound,
    Place,
    find_center,
    find_district,
)
from routing.lines import LineError, LineNotFound, add_line, list_lines, remove_line

__all__ = ["LineError", "add_parsers", "cmd_lines"]


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("lines", help="hotline numbers (专属分机号): list, add, remove")
    lines = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    lines.add_parser("list", help="every hotline number and what it selects")
    add = lines.add_parser("add", help="a number for a district, or for one center")
    add.add_argument("number", help="the number or extension dialled (the SIP user part)")
    add.add_argument("--district", help="district name (default: the only one)")
    add.add_argument("--center", help="a center of its own: unknown callers reach its agents first")
    add.add_argument("--label", default="")
    add.add_argument("--greeting", help="an audio file the line greets with (WAV, or anything ffmpeg reads); "
                     "copied into the prompt store, DATA_DIR/prompts")
    rm = lines.add_parser("remove", help="stop answering a number specially")
    rm.add_argument("number")


async def cmd_lines(rt: Runtime, args: argparse.Namespace) -> int:
    async with checked_pool(rt.database_url) as pool, pool.acquire() as conn:
        if args.action == "list":
            return await _list(conn)
        if args.action == "remove":
            try:
                await remove_line(conn, args.number)
            except LineNotFound as exc:
                raise NotFound(str(exc)) from None
            print(f"{args.number}: removed")
            return 0
        return await _add(rt, conn, args)


async def _list(conn: asyncpg.Connection) -> int:
    rows = await list_lines(conn)
    for r in rows:
        scope = f"{r.district} / {r.center}" if r.center else f"{r.district} (whole district)"
        greeting = f", greeting {r.greeting}" if r.greeting else ""
        print(f"{r.number}: {scope}{' — ' + r.label if r.label else ''}{greeting}")
    if not rows:
        print("no hotline lines: every number dialled gets the default chain and greeting")
    return 0


async def _stored_greeting(rt: Runtime, conn: asyncpg.Connection, source: str) -> Path:
    """The greeting copied into the service's prompt store (ivr/prompt_store.py), or LineError."""
    from ivr.prompt_store import PromptRefused, file_sha256, store_prompt

    config = rt.config
    try:
        sha = await asyncio.to_thread(file_sha256, source)
        known = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM call_records WHERE recording_sha256 = $1)"
            " OR EXISTS (SELECT 1 FROM voicemails WHERE sha256 = $1)", sha)
        # a file that changed since it was hashed is refused too, rather than checked half
        return await asyncio.to_thread(
            store_prompt, source, data_dir=config.data_dir,
            private_roots=[config.recordings_path, config.data_dir],
            is_resident_audio=lambda seen: known or seen != sha)
    except PromptRefused as exc:
        raise LineError(f"--greeting {exc}") from None


async def _add(rt: Runtime, conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    try:
        place: Place = await find_center(conn, args.center) if args.center else await find_district(conn, args.district)
    except CalendarNotFound as exc:
        raise NotFound(str(exc)) from None
    except CalendarError as exc:
        raise LineError(str(exc)) from None
    greeting = None
    if args.greeting:
        greeting = str(await _stored_greeting(rt, conn, args.greeting))
    await add_line(conn, args.number, place, label=args.label, greeting=greeting)
    print(f"{args.number}: {place.center or place.district}" + (f", greeting {greeting}" if greeting else ""))
    return 0
