"""`hotline tasks call|cancel-call`: click-to-call from the command line (issue 11), two actions
of the `tasks` group (hotline/cli_tasks.py).

`call` writes a request that a running service node (`hotline serve`) takes: it rings the staff
member's own softphone, then the task's resident, and bridges them. The command prints the
request id at once, then waits (at most --wait seconds) until the resident answers or the
request ends. Exit codes beyond the usual ones (0 done, 1 not found, 2 bad input or refused):

    0  the resident answered (the call is bridged; it ends when a phone hangs up)
    3  the call did not connect: the outcome says why (no_answer, busy, unreachable,
       staff_no_answer, staff_busy, staff_unreachable, cancelled, failed)
    4  no outcome within --wait: the request is cancelled (a phone still ringing is hung up)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import asyncpg

from hotline.cli_common import NotFound
from hotline.clock import Clock
from hotline.runtime import Runtime
from recordings.call_requests import (
    CallRequest,
    CallRequestError,
    CallRequestNotFound,
    CallRequests,
)

__all__ = ["CallRequestError", "add_call_parsers", "call", "cancel_call"]

EXIT_NOT_CONNECTED = 3
EXIT_NO_OUTCOME = 4
WAIT_MAX_S = 600.0


def add_call_parsers(tasks: Any) -> None:
    """`call` and `cancel-call` under the `tasks` group's subparsers."""
    call = tasks.add_parser("call", help="ring the staff member's softphone, then the task's resident")
    call.add_argument("task_id", type=int, help="the task's id")
    call.add_argument("--staff", required=True, help="工号 of the staff member whose softphone rings first")
    call.add_argument("--wait", type=float, default=120.0,
                      help=f"seconds to wait for the outcome (at most {WAIT_MAX_S:g}; default 120)")
    call.add_argument("--json", action="store_true", help="the request as JSON")
    cancel = tasks.add_parser("cancel-call", help="stop a call before the resident answers (hangs up both)")
    cancel.add_argument("request_id", type=int)
    cancel.add_argument("--json", action="store_true")


def _show(request: CallRequest, as_json: bool) -> None:
    if as_json:
        print(json.dumps(request.as_json(), ensure_ascii=False))
        return
    outcome = request.outcome or ("answered" if request.state == "connected" else request.state)
    record = f", call record {request.call_record_id}" if request.call_record_id else ""
    print(f"request {request.id}: {outcome}{record}" + (f" ({request.reason})" if request.reason else ""))


def _actor(rt: Runtime) -> str:
    return rt.actor + (f" ({rt.claimed_actor})" if rt.claimed_actor else "")


async def cancel_call(rt: Runtime, pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    try:
        request = await CallRequests(pool).cancel(args.request_id, by=_actor(rt),
                                                  at=Clock(rt.config.clock_start_at).now())
    except CallRequestNotFound as exc:
        raise NotFound(str(exc)) from None
    _show(request, args.json)
    return 0


async def call(rt: Runtime, pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    clock = Clock(rt.config.clock_start_at)
    requests = CallRequests(pool)
    try:
        if not 0 < args.wait <= WAIT_MAX_S:
            raise CallRequestError(f"--wait must be between 0 and {WAIT_MAX_S:g} seconds")
        staff_id = await pool.fetchval("SELECT id FROM staff WHERE staff_no = $1", args.staff)
        if staff_id is None:
            raise NotFound(f"staff member {args.staff} does not exist")
        request = await requests.request(task_id=args.task_id, staff_id=staff_id, requested_by=_actor(rt),
                                         at=clock.now(), pickup_s=rt.config.click_to_call_pickup_s)
        if not args.json:
            print(f"request {request.id}: ringing {args.staff}'s softphone", flush=True)
        request = await requests.wait(request.id, args.wait)
        if not request.finished and request.state != "connected":
            try:
                request = await requests.cancel(request.id, by=_actor(rt) + " (--wait ran out)", at=clock.now())
            except CallRequestError:  # it connected or ended that instant
                request = await requests.get(request.id) or request
            if request.state != "connected" and request.outcome in (None, "cancelled"):
                _show(request, args.json)  # cancelled by us (unless an outcome came meanwhile)
                return EXIT_NO_OUTCOME
        _show(request, args.json)
        connected = request.state == "connected" or request.outcome == "answered"
        return 0 if connected else EXIT_NOT_CONNECTED
    except CallRequestNotFound as exc:
        raise NotFound(str(exc)) from None
