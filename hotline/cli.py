"""The `hotline` command. Errors an operator can act on are printed as one line, exit code 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from hotline import (
    cli_accounts,
    cli_calendar,
    cli_click_to_call,
    cli_db,
    cli_handover,
    cli_lines,
    cli_promises,
    cli_roster,
    cli_sip,
    cli_tasks,
    cli_web,
)
from hotline.cli_common import EXIT_ERROR, EXIT_NOT_FOUND, NotFound, print_rejected
from hotline.config import Config, ConfigError, load_config
from hotline.logs import configure_logging
from hotline.runtime import Runtime, all_migrations, checked_pool, open_runtime
from routing.calendar_store import CalendarNotFound
from routing.numbers import InvalidNumber, looks_like_resident_id
from routing.seed import SeedError
from routing.sip_accounts import SipAccountError
from store import db, embedded
from store.errors import StoreError
from store.migrate import migrate
from store.pii import PiiKeyError, mask_if_pii, mask_phone
from telephony.agent import TelephonyError

log = structlog.get_logger("hotline.cli")



class UsageError(Exception):
    """A bad argument value; the message says which and why."""


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


# --- commands -------------------------------------------------------------------------------

def cmd_config(config: Config, _args: argparse.Namespace) -> int:
    unset = {
        "database_url": "(unset: embedded PostgreSQL in data_dir)",
        "redis_url": "(unset: embedded Redis in data_dir)",
        "pii_key": "(unset: generated key in data_dir/pii.key)",
        "actor": "(unset; the audit log names cli:<OS user> either way)",
    }
    for name, value in config.masked().items():
        print(f"{name} = {value or unset.get(name, '')}")
    return 0


async def cmd_migrate(rt: Runtime, _args: argparse.Namespace) -> int:
    async with db.connection(rt.database_url) as conn:
        applied = await migrate(conn, all_migrations())
    if applied:
        for m in applied:
            print(f"applied {m.slice}/{m.name}")
        log.info("migrations.applied", versions=[m.version for m in applied])
    else:
        print("schema is up to date")
    return 0


def cmd_services(config: Config, args: argparse.Namespace) -> int:
    data_dir = config.data_dir
    if args.action == "stop":
        pg = embedded.stop_postgres(data_dir)
        rd = embedded.stop_redis(data_dir)
        print(f"embedded PostgreSQL: {'stopped' if pg else 'was not running'}")
        print(f"embedded Redis: {'stopped' if rd else 'was not running'}")
        return 0
    if args.action == "start":
        if not config.database_url:
            print(f"embedded PostgreSQL: {embedded.ensure_postgres(data_dir)}")
        if not config.redis_url:
            print(f"embedded Redis: {embedded.ensure_redis(data_dir)}")
        return 0
    # status: check what is configured, starting nothing
    return asyncio.run(_services_status(config))


async def _services_status(config: Config) -> int:
    from store.redis import connect_redis

    ok = True
    checks: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
    if config.database_url:
        async def pg() -> None:
            async with db.connection(config.database_url) as conn:
                await conn.fetchval("SELECT 1")
        checks.append(("PostgreSQL", pg))
    if config.redis_url:
        async def rd() -> None:
            client = await connect_redis(config.redis_url)
            await client.aclose()
        checks.append(("Redis", rd))
    for name, check in checks:
        try:
            await check()
            print(f"{name}: reachable")
        except StoreError as exc:
            print(f"{name}: {exc}")
            ok = False
    if not config.database_url:
        running = embedded.postgres_running(config.data_dir)
        ok = ok and running
        print(f"embedded PostgreSQL: {'running' if running else 'stopped'}")
    if not config.redis_url:
        running = embedded.redis_running(config.data_dir)
        ok = ok and running
        print(f"embedded Redis: {'running' if running else 'stopped'}")
    # non-zero when anything is down, so scripts can tell (scripts/demo.sh does)
    return 0 if ok else EXIT_ERROR


async def cmd_seed(rt: Runtime, args: argparse.Namespace) -> int:
    from routing import seed

    async with checked_pool(rt.database_url) as pool:
        today = datetime.now(rt.config.tz).date()
        if args.kind == "demo":
            try:
                counts = await seed.seed_demo(pool, rt.vault, today=today, tz=rt.config.tz)
            except seed.AlreadySeeded as exc:
                if not args.if_missing:
                    raise
                print(exc)
                await _demo_accounts(rt, pool)
                await _print_demo_clock(rt, pool)
                return 0
        else:
            counts = await seed.seed_synthetic(
                pool, rt.vault, residents=args.residents, seed=args.seed, today=today,
                tz=rt.config.tz,
            )
        log.info("seed.loaded", kind=args.kind, **counts)
        print(", ".join(f"{n} {what}" for what, n in counts.items()))
        if args.kind == "demo":
            await _demo_accounts(rt, pool)
            await _print_demo_clock(rt, pool)
    return 0


async def _demo_accounts(rt: Runtime, pool: Any) -> None:
    """The demo's console logins (web/accounts.py DEMO_LOGINS), set unless they have an account
    already; one `console login …` line each (the demo banner shows two: scripts/demo.sh)."""
    from web.accounts import DEMO_LOGINS, DEMO_PASSWORD, ensure_demo_accounts

    set_now = {staff_no for staff_no, _, _ in await ensure_demo_accounts(pool, actor=rt.actor)}
    for staff_no, _role, what in DEMO_LOGINS:
        kept = "" if staff_no in set_now else " (unless changed since)"
        print(f"console login {staff_no} / {DEMO_PASSWORD}{kept}: {what}")


async def _print_demo_clock(rt: Runtime, pool: Any) -> None:
    """The clocks to start the demo at to try each service, inside the seeded roster (the demo
    banner shows these lines: scripts/demo.sh)."""
    from routing.seed import demo_clock

    async with pool.acquire() as conn:
        clock = await demo_clock(conn, await _calendar_loader(rt.config)(conn), datetime.now(rt.config.tz))
    tz = rt.config.tz
    for what, at in (("day", clock.day), ("night", clock.night)):
        if at is not None:
            print(f"try {what} service: HOTLINE_CLOCK_START={at.astimezone(tz).isoformat()} make demo")
    if clock.night is None:
        ended = f" (it ended {clock.roster_ends.astimezone(tz):%Y-%m-%d})" if clock.roster_ends else ""
        print(f"the demo roster has no night shift left{ended}: `make clean && make demo` seeds a fresh one")


async def cmd_import(rt: Runtime, args: argparse.Namespace) -> int:
    from routing.importer import ImportRejected, import_csv
    from routing.sheets import DEFAULT_MAX_SIZE, parse_size

    try:
        max_size = parse_size(args.max_size) if args.max_size else DEFAULT_MAX_SIZE
    except ValueError:
        raise UsageError(f"--max-size: cannot read {args.max_size!r} as a size (50MB, 200M, 1G)") from None
    try:
        async with checked_pool(rt.database_url) as pool:
            count = await import_csv(pool, rt.vault, args.kind, Path(args.file), tz=rt.config.tz,
                                     max_size=max_size, area_code=rt.config.area_code)
    except ImportRejected as exc:
        log.warning("import.rejected", kind=args.kind, file=args.file, problems=len(exc.problems))
        return print_rejected(args.file, exc.problems)
    log.info("import.done", kind=args.kind, file=args.file, rows=count)
    print(f"imported {count} {args.kind} from {args.file}")
    return 0


async def cmd_residents(rt: Runtime, args: argparse.Namespace) -> int:
    from routing.directory import Directory

    async with checked_pool(rt.database_url) as pool:
        directory = Directory(pool, rt.vault, area_code=rt.config.area_code)
        today = datetime.now(rt.config.tz).date()
        if args.action == "list":
            if args.limit < 1:
                raise UsageError("--limit must be at least 1")
            if args.center and not await directory.center_exists(args.center):
                raise NotFound(f"no center named {args.center!r}")
            views = await directory.list_residents(
                center=args.center, limit=args.limit, actor=rt.actor, on=today,
                claimed_actor=rt.claimed_actor,
            )
            if args.json:
                _print_json([v.as_json() for v in views])
            else:
                for v in views:
                    doctor = v.doctor["name"] if v.doctor else "(no contract)"
                    print(f"{v.id:>8}  {v.name:<6}  {v.center:<6}  {doctor:<6}  {' '.join(v.phones)}")
            return 0
        views = await directory.show_residents(
            args.number, actor=rt.actor, reason=args.reason, on=today,
            claimed_actor=rt.claimed_actor,
        )
    log.info("resident.read", actor=rt.actor, claimed_actor=rt.claimed_actor, resident_ids=[v.id for v in views], reason=args.reason)
    if not views:
        asked = args.number.strip()
        raise NotFound(f"no resident has the id {asked}" if looks_like_resident_id(asked)
                       else f"no resident has the number {mask_if_pii(asked)}")
    first, *others = views
    data = first.as_json()
    if others:
        data["also_at_this_number"] = [{"id": v.id, "name": v.name} for v in others]
    if args.json:
        _print_json(data)
    else:
        for key, value in data.items():
            print(f"{key:>12}: {value}")
    return 0


def _parse_instant(text: str | None, config: Config) -> datetime:
    if text is None:
        return datetime.now(config.tz)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--at: cannot read {text!r} as an ISO 8601 time (e.g. 2026-11-23T10:00+08:00)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=config.tz)


async def cmd_route(rt: Runtime, args: argparse.Namespace) -> int:
    """The whole fallback chain for a call, with a reason per step and per person skipped."""
    from routing.chain import route_chain
    from routing.directory import Directory
    from routing.numbers import normalize_phone
    from routing.snapshot import load_routing_data

    at = _parse_instant(args.at, rt.config)
    try:
        masked_caller = mask_phone(normalize_phone(args.caller, rt.config.area_code))
    except InvalidNumber as exc:
        raise UsageError(f"--caller: {exc}") from None
    async with checked_pool(rt.database_url) as pool:
        caller = await Directory(pool, rt.vault, area_code=rt.config.area_code).find_caller(args.caller)
        async with pool.acquire() as conn:
            data = await load_routing_data(conn, at, _calendar_loader(rt.config),
                                           rt.config.step_ring_timeouts, rt.config.tz)
    line = data.lines.get(args.line) if args.line else None
    if args.line and line is None:
        raise NotFound(f"--line: {args.line!r} is not a hotline line (see `hotline lines list`)")
    decision = route_chain(caller, at, data, line=line)
    log.info("route.decided", caller=masked_caller,
             resident_id=caller.resident_id if caller else None, service=decision.service,
             steps=[s.name for s in decision.steps])
    explained = decision.as_json()
    if args.json:
        _print_json({"caller": masked_caller,
                     "resident": {"id": caller.resident_id, "name": caller.name} if caller else None,
                     "at": at.astimezone(rt.config.tz).isoformat(), **explained})
        return 0
    who = f"{caller.name} (resident {caller.resident_id})" if caller else "unknown caller"
    print(f"caller {masked_caller}: {who}")
    print(f"at {at.astimezone(rt.config.tz).isoformat()}: {decision.reason}")
    n = 0
    for step in explained["steps"]:
        timeout = f", rings {step['ring_timeout_s']:g} s" if step["targets"] else ""
        print(f"  {step['title']}: {step['reason']}{timeout}")
        for t in step["targets"]:
            n += 1
            print(f"    {n}. {t['name']} ({t['role']}, {t['sip_uri']}) — {t['reason']}")
        for k in step["skipped"]:
            print(f"    -  {k['reason']}")
    return 0


def _calendar_loader(config: Config) -> Any:
    """The working-day calendar routing judges day and night by (routing/calendar.py)."""
    from routing.calendar_store import calendar_loader

    return calendar_loader(config.tz, config.day_start, config.day_end)


# --- parsing and dispatch ---------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hotline", description="Jiayi Hotline (家医热线) service")
    p.add_argument("--config", help="TOML configuration file (overrides HOTLINE_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("config", help="print the effective configuration, secrets masked")
    sub.add_parser("migrate", help="apply pending database migrations")

    s = sub.add_parser("services", help="the embedded PostgreSQL and Redis in the data directory")
    s.add_argument("action", choices=["start", "stop", "status"])

    s = sub.add_parser("seed", help="load demo or synthetic data")
    seed_sub = s.add_subparsers(dest="kind", required=True, metavar="KIND")
    demo = seed_sub.add_parser("demo", help="the demo district 滨海新区 with three pilot centers")
    demo.add_argument("--if-missing", action="store_true",
                      help="succeed without changes when the demo district is already loaded")
    syn = seed_sub.add_parser("synthetic", help="a district at real size, for benchmarks")
    syn.add_argument("--residents", type=int, default=510_000)
    syn.add_argument("--seed", type=int, default=1, help="random seed (same seed, same data)")

    s = sub.add_parser("import", help="load a district's list, .xlsx or CSV (all-or-nothing)")
    s.add_argument("kind", choices=["residents", "staff", "roster"])
    s.add_argument("file", help=".xlsx, or CSV in UTF-8, GBK/GB18030 or UTF-16 (docs/import.md)")
    s.add_argument("--max-size", help="refuse larger files (default 50MB; e.g. 200MB, 1G)")

    s = sub.add_parser("residents", help="look residents up")
    res_sub = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = res_sub.add_parser("list", help="residents with masked phone numbers")
    ls.add_argument("--center", help="only this center (社区卫生服务中心)")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true")
    sh = res_sub.add_parser("show", help="one resident by phone, ID-card number or resident id (audited)")
    sh.add_argument("number", help="a phone number, an ID-card number, or the resident's id as "
                                   "`residents list` shows it (id:42; a bare number of up to 6 digits too)")
    sh.add_argument("--json", action="store_true")
    sh.add_argument("--reason", default="cli lookup", help="why, for the audit log")

    s = sub.add_parser("route", help="who would answer a call, and why")
    s.add_argument("--caller", required=True, help="the calling number")
    s.add_argument("--line", help="the hotline number dialled (专属分机号), if not the default")
    s.add_argument("--at", help="ISO 8601 instant (default: now; no offset = the center's zone)")
    s.add_argument("--json", action="store_true")

    sub.add_parser("serve", help="run the hotline: register with the PBX and take calls (Ctrl-C stops)")
    cli_roster.add_parsers(sub)
    cli_calendar.add_parser(sub)
    cli_lines.add_parsers(sub)
    cli_db.add_parsers(sub)
    cli_sip.add_parsers(sub)
    cli_web.add_parsers(sub)
    cli_handover.add_parsers(sub)
    cli_tasks.add_parsers(sub)
    cli_promises.add_parsers(sub)
    return p


def _tell(text: str) -> None:
    """A line for the operator that may find nobody reading (a pipe's reader gone with a Ctrl-C):
    stopping the service matters more than saying so."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        pass


async def cmd_serve(rt: Runtime, _args: argparse.Namespace) -> int:
    """Run the hotline until SIGINT/SIGTERM; then take no new calls and let the calls in
    progress end (at most drain_s; a second signal hangs them up at once)."""
    import signal

    from hotline.service import running

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    config = rt.config
    async with running(rt) as service, \
            cli_web.console_beside(rt, service.pool, service.redis_url, service.clock) as site:
        state = "registered" if service.agent.registered else "registering (the registrar does not answer yet)"
        _tell(f"hotline: serving sip:{config.sip_user}@{config.sip_registrar} from "
              f"{config.sip_local_ip}:{config.sip_port}, {state}; clock {service.clock.now().astimezone(config.tz):%Y-%m-%d %H:%M %Z}")
        _tell(f"hotline: console at {site.url}")
        await stop.wait()
        stop.clear()
        if service.calls:
            _tell(f"hotline: stopping; {len(service.calls)} call(s) in progress may go on for up to "
                  f"{config.drain_s:g} s (signal again to hang them up now)")
        await service.wind_down(config.drain_s, cut=stop)
    return 0


_NEEDS_RUNTIME: dict[str, Callable[[Runtime, argparse.Namespace], Awaitable[int]]] = {
    "migrate": cmd_migrate,
    "seed": cmd_seed,
    "import": cmd_import,
    "residents": cmd_residents,
    "route": cmd_route,
    "serve": cmd_serve,
    "roster": lambda rt, args: cli_roster.cmd_roster(rt, args, _calendar_loader(rt.config)),
    "staff": cli_roster.cmd_staff,
    "calendar": cli_calendar.cmd_calendar,
    "lines": cli_lines.cmd_lines,
    "sip-password": cli_sip.cmd_sip_password,
    "pbx": cli_sip.cmd_pbx,
    "web": cli_web.cmd_web,
    "handover": cli_handover.cmd_handover,
    "tasks": cli_tasks.cmd_tasks,
    "referrals": cli_tasks.cmd_referrals,
    "promises": cli_promises.cmd_promises,
}


async def _run(config: Config, args: argparse.Namespace) -> int:
    rt = await open_runtime(config)
    return await _NEEDS_RUNTIME[args.command](rt, args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `db shell` hands what follows it to psql; every other command takes only its own options
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "db":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        config = load_config(config_file=args.config)
        configure_logging(config.log_format, config.log_level)
        if args.command == "config":
            return cmd_config(config, args)
        if args.command == "services":
            return cmd_services(config, args)
        if args.command == "db":
            return cli_db.cmd_db(config, args, extra)
        return asyncio.run(_run(config, args))
    except (ConfigError, StoreError, PiiKeyError, UsageError, InvalidNumber, SeedError,
            TelephonyError, cli_roster.RosterError, cli_lines.LineError, cli_db.DbShellError,
            SipAccountError, cli_accounts.PasswordCliError, cli_click_to_call.CallRequestError,
            cli_promises.PromisesError) as exc:
        print(f"hotline: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (NotFound, CalendarNotFound) as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except KeyboardInterrupt:
        return 130
