"""`hotline tasks list|show|note|close` and `hotline referrals add|list`: tasks and referrals from a
terminal, with the rules of handover/ (the same refusals as the console).

`--as BH0001` names the staff member the change is made for: her scope applies (a task she could
not see is "没有这个任务", as in the console) and the task's history names her. Numbers are shown
masked only.

Exit codes (documented in README's CLI table):
  0  done / listed;
  1  refused: the task or referral rules said no (the message is the TaskError's or
     ReferralError's, e.g. "没有任务开启后与居民接通的通话，不能标记为完成"), or what is named does
     not exist (a task, a staff member, a resident);
  2  usage: a bad option or value (argparse, a malformed --at).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from handover.ownership import routing_source
from handover.referrals import ReferralError, Referrals
from handover.task_view import (
    EVENT_NAMES,
    OUTCOME_NAMES,
    STATUS_NAMES,
    TaskFilter,
    list_tasks,
    task_view,
)
from handover.tasks import STATUSES, TaskError, Tasks
from hotline.cli_click_to_call import add_call_parsers, call, cancel_call
from hotline.cli_common import EXIT_ERROR
from hotline.runtime import Runtime, checked_pool
from routing.directory import Directory
from routing.numbers import InvalidNumber
from routing.scope import ROLES, Scope, Viewer
from store.audit import record_read, subject

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, EXIT_ERROR
__all__ = ["add_parsers", "cmd_referrals", "cmd_tasks"]


def add_parsers(sub: Any) -> None:
    """The `tasks` and `referrals` command groups. A new `tasks` subcommand is a parser added to
    `tasks` here and its function in TASK_ACTIONS."""
    s = sub.add_parser("tasks", help="promises the hotline keeps: callbacks, referral follow-ups …")
    tasks = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = tasks.add_parser("list", help="tasks, soonest due first (default: the open ones)")
    ls.add_argument("--owner", help="the owner's staff number (工号)")
    ls.add_argument("--kind", help="callback, referral_followup, handover, …")
    ls.add_argument("--status", choices=[*STATUSES, "any"], default="open")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true")
    show = tasks.add_parser("show", help="one task: calls, attempts, history")
    show.add_argument("task_id", type=int)
    show.add_argument("--json", action="store_true")
    note = tasks.add_parser("note", help="add a note to a task")
    note.add_argument("task_id", type=int)
    note.add_argument("--as", dest="as_staff", required=True, help="staff number writing it")
    note.add_argument("--text", required=True)
    close = tasks.add_parser("close", help="close a task as done (needs an answered call) or unreachable")
    close.add_argument("task_id", type=int)
    close.add_argument("--as", dest="as_staff", required=True, help="staff number closing it")
    close.add_argument("--status", choices=["done", "unreachable"], required=True)
    close.add_argument("--note", required=True, help="what was done")
    close.add_argument("--outcome", help="for kinds with outcomes: seen, admitted, not_gone, other …")
    close.add_argument("--late-reason", help="required when closing after the deadline")
    add_call_parsers(tasks)

    s = sub.add_parser("referrals", help="referrals (转诊) and their 72-hour follow-ups")
    ref = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = ref.add_parser("add", help="record a referral; opens its follow-up task")
    add.add_argument("--resident", required=True, help="phone number, ID-card number or id:N")
    add.add_argument("--hospital", required=True)
    add.add_argument("--department", required=True)
    add.add_argument("--reason", required=True)
    add.add_argument("--at", help="when (ISO 8601; default now; no offset = the district's zone)")
    add.add_argument("--as", dest="as_staff", required=True, help="staff number recording it")
    add.add_argument("--json", action="store_true")
    rl = ref.add_parser("list", help="referrals, newest first")
    rl.add_argument("--doctor", help="staff number: referrals she recorded or follows up")
    rl.add_argument("--center", type=int, help="the residents' center id")
    rl.add_argument("--status", choices=list(STATUSES), help="the follow-up's status")
    rl.add_argument("--limit", type=int, default=100)
    rl.add_argument("--json", action="store_true")


class Refused(Exception):
    """A refusal in words (exit 1)."""


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


async def staff_viewer(conn: asyncpg.Pool | asyncpg.Connection, staff_no: str, on: Any) -> Viewer:
    """The staff member `--as` names, as the console's scope would see her."""
    row = await conn.fetchrow(
        "SELECT id, staff_no, name, role, district_id, center_id, team_id, left_on FROM staff"
        " WHERE staff_no = $1", staff_no.strip())
    if row is None or (row["left_on"] is not None and row["left_on"] <= on) or row["role"] not in ROLES:
        raise TaskError("unknown_staff", staff_no)
    return Viewer(row["id"], row["staff_no"], row["name"], row["role"], row["district_id"],
                  row["center_id"], row["team_id"])


async def _audited(pool: asyncpg.Pool, rt: Runtime, action: str, about: str, reason: str = "") -> None:
    """The operator's read of residents' tasks or referrals (names, masked numbers): audited as
    `residents list` is, since no scope narrows what the CLI reads."""
    async with pool.acquire() as conn:
        await record_read(conn, actor=rt.actor, action=action, subject=about, reason=reason[:1000],
                          claimed_actor=rt.claimed_actor)


def _local(at: datetime | None, rt: Runtime) -> str:
    return "" if at is None else at.astimezone(rt.config.tz).strftime("%Y-%m-%d %H:%M")


async def _list(rt: Runtime, pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500:
        raise UsageProblem("--limit: from 1 to 500")
    tasks = Tasks(pool)
    owner = await tasks.staff_id(args.owner) if args.owner else None
    # the operator's view: the whole district (the CLI runs beside the database)
    everyone = _OperatorScope()
    rows = await list_tasks(pool, tasks, everyone, TaskFilter(
        kind=args.kind, status=None if args.status == "any" else args.status, owner_staff_id=owner),
        now=datetime.now(UTC), limit=args.limit)
    await _audited(pool, rt, "tasks.listed", subject("task", "*"),
                   f"cli tasks list owner={args.owner or ''} kind={args.kind or ''} status={args.status}")
    if args.json:
        _print_json(rows)
        return EXIT_OK
    for r in rows:
        print(f"{r['id']:>8}  {r['kind_title']:<8} {STATUS_NAMES.get(r['status'], r['status']):<4} "
              f"due {_local(r['due_at'], rt)}  {r['owner_no'] or '-':<8} "
              f"{r['resident_name'] or '-'} {r['caller_masked']}")
    return EXIT_OK


async def _show(rt: Runtime, pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    view = await task_view(pool, Tasks(pool), _OperatorScope(), args.task_id, now=datetime.now(UTC))
    await _audited(pool, rt, "task.read", subject("task", args.task_id), "cli tasks show")
    if args.json:
        _print_json(view.as_json())
        return EXIT_OK
    t = view.task
    print(f"task #{t.id}  {view.kind.title} ({t.kind})  version {t.version}")
    print(f"  status    {STATUS_NAMES.get(t.status, t.status)}"
          + (f" · {OUTCOME_NAMES.get(t.close_outcome, t.close_outcome)}" if t.close_outcome else ""))
    print(f"  resident  {view.resident_name or '-'} {t.caller_number_masked}")
    print(f"  owner     {view.owner_name or 'duty desk'} {view.owner_no or ''}")
    print(f"  opened    {_local(t.opened_at, rt)}   due {_local(t.due_at, rt)}"
          f"   attempts {t.attempts}/{view.kind.attempts_to_unreachable}")
    for c in view.calls:
        mark = " evidence" if c.evidence else ""
        print(f"  call {c.call_id}  {_local(c.offered_at, rt)}  {c.disposition}  "
              f"{c.answered_by_name or ''}{mark}")
    for h in view.history:
        moved = f" {h.owner_from_name or '-'} -> {h.owner_to_name or '-'}" if h.owner_to_name else ""
        text = h.detail.get("text") or ""
        print(f"  v{h.version:<3} {_local(h.at, rt)}  {h.actor_name or 'hotline'}  "
              f"{EVENT_NAMES.get(h.event, h.event)}{moved} {h.reason} {text}".rstrip())
    return EXIT_OK


async def _writer(pool: asyncpg.Pool, staff_no: str, rt: Runtime) -> Scope:
    who = Scope(await staff_viewer(pool, staff_no, datetime.now(rt.config.tz).date()))
    if who.read_only:
        raise Refused("只读账号不能修改数据")
    return who


async def _note(rt: Runtime, pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    who = await _writer(pool, args.as_staff, rt)
    tasks = Tasks(pool)
    task = await tasks.get(args.task_id, who)
    done = await tasks.note(args.task_id, version=task.version, actor_staff_id=who.viewer.staff_id,
                            text=args.text, scope=who)
    print(f"task #{done.id}: note added (version {done.version})")
    return EXIT_OK


async def _close(rt: Runtime, pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    who = await _writer(pool, args.as_staff, rt)
    tasks = Tasks(pool)
    task = await tasks.get(args.task_id, who)
    done = await tasks.close(args.task_id, version=task.version, actor_staff_id=who.viewer.staff_id,
                             status=args.status, note=args.note, outcome=args.outcome,
                             late_reason=args.late_reason, scope=who)
    print(f"task #{done.id}: {STATUS_NAMES.get(done.status, done.status)}"
          + (f" (evidence: call {done.evidence_call_id})" if done.evidence_call_id else ""))
    return EXIT_OK


TASK_ACTIONS: dict[str, Callable[[Runtime, asyncpg.Pool, argparse.Namespace], Awaitable[int]]] = {
    "list": _list, "show": _show, "note": _note, "close": _close,
    "call": call, "cancel-call": cancel_call,
}


class UsageProblem(Exception):
    """A bad value the parser could not judge (exit 2)."""


class _OperatorScope(Scope):
    """The operator at the database's side sees every task (as `residents list` sees every
    resident): no scope predicate."""

    def __init__(self) -> None:
        super().__init__(Viewer(0, "cli", "operator", "district_admin", 0))

    def tasks(self, p: Any, t: str = "t") -> str:
        return "true"

    def referrals(self, p: Any, rf: str = "rf") -> str:
        return "true"


async def _run(rt: Runtime, work: Callable[[asyncpg.Pool], Awaitable[int]]) -> int:
    try:
        async with checked_pool(rt.database_url) as pool:
            return await work(pool)
    except (TaskError, ReferralError) as exc:
        print(f"hotline: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_REFUSED
    except Refused as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except UsageProblem as exc:
        print(f"hotline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def cmd_tasks(rt: Runtime, args: argparse.Namespace) -> int:
    return await _run(rt, lambda pool: TASK_ACTIONS[args.action](rt, pool, args))


def _at(text: str | None, rt: Runtime) -> datetime | None:
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageProblem(f"--at: {text!r} is not an ISO 8601 instant") from None
    return at if at.tzinfo else at.replace(tzinfo=rt.config.tz)


async def _resident(pool: asyncpg.Pool, rt: Runtime, who: Scope, text: str) -> int:
    try:
        ids = await Directory(pool, rt.vault, area_code=rt.config.area_code).resident_ids(text)
    except InvalidNumber:
        raise ReferralError("unknown_resident") from None
    return await Referrals(pool, rt.config.tz).resident_in_scope(who, ids)


async def _referral_add(rt: Runtime, pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    at = _at(args.at, rt)
    who = Scope(await staff_viewer(pool, args.as_staff, datetime.now(rt.config.tz).date()))
    if not who.can("referrals.add"):
        raise Refused(f"{args.as_staff} 的角色不能登记转诊")
    routing = routing_source(pool, rt.config.tz, rt.config.day_start, rt.config.day_end)
    added = await Referrals(pool, rt.config.tz, routing=routing).add(
        who, resident_id=await _resident(pool, rt, who, args.resident), hospital=args.hospital,
        department=args.department, reason=args.reason, referred_at=at)
    if args.json:
        _print_json(added.as_json())
    else:
        print(f"referral #{added.id}: follow-up task #{added.followup_task_id} due "
              f"{_local(added.followup_due_at, rt)}, owner {added.followup_owner_name or 'duty desk'}")
    return EXIT_OK


async def _referral_list(rt: Runtime, pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 500:
        raise UsageProblem("--limit: from 1 to 500")
    doctor = await Tasks(pool).staff_id(args.doctor) if args.doctor else None
    rows = await Referrals(pool, rt.config.tz).list(
        _OperatorScope(), doctor_id=doctor, center_id=args.center, status=args.status,
        limit=args.limit)
    await _audited(pool, rt, "referrals.listed", subject("center", args.center or "*"),
                   f"cli referrals list doctor={args.doctor or ''} status={args.status or ''}")
    if args.json:
        _print_json([r.as_json() for r in rows])
        return EXIT_OK
    for r in rows:
        print(f"{r.id:>6}  {_local(r.referred_at, rt)}  {r.resident_name}  {r.hospital} {r.department}"
              f"  by {r.recorded_by_no}  task #{r.followup_task_id} "
              f"{STATUS_NAMES.get(r.followup_status, r.followup_status)}"
              f" due {_local(r.followup_due_at, rt)}")
    return EXIT_OK


REFERRAL_ACTIONS = {"add": _referral_add, "list": _referral_list}


async def cmd_referrals(rt: Runtime, args: argparse.Namespace) -> int:
    return await _run(rt, lambda pool: REFERRAL_ACTIONS[args.action](rt, pool, args))
