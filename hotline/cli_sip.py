"""`hotline staff sip-password BH0001` and `hotline sip-password hotline`: the production PBX's
digest passwords (routing/sip_accounts.py), and `hotline pbx env`: how Kamailio reaches the
database.

A password is read twice from the terminal without echo (getpass), or once from standard input
with --password-stdin (scripts, tests); it never appears in arguments, logs or the database.
"""

from __future__ import annotations

import argparse
import getpass
import shlex
import sys
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from hotline.runtime import Runtime, checked_pool
from routing.sip_accounts import (
    SipAccount,
    SipAccountError,
    remove_password,
    service_account,
    set_password,
    staff_account,
)


def _password_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (no prompt)")
    parser.add_argument("--remove", action="store_true",
                        help="remove the credentials: the phone can no longer register or call")


def add_staff_parser(staff_actions: Any) -> None:
    """`staff sip-password`, under the existing `staff` command."""
    p = staff_actions.add_parser("sip-password", help="set the digest password of a staff member's extension")
    p.add_argument("staff_no", help="staff number (工号)")
    _password_options(p)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("sip-password", help="set the digest password of the service's own SIP account")
    p.add_argument("account", help="the service's SIP user (HOTLINE_SIP_USER, e.g. hotline)")
    _password_options(p)
    pbx = sub.add_parser("pbx", help="the PBX's view of the database")
    actions = pbx.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("env", help="shell lines KAMAILIO_DBURL=… (and PGHOST=…) for Kamailio's DBURL")


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise SipAccountError("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("new SIP password: ")
    if getpass.getpass("again: ") != first:
        raise SipAccountError("the two passwords differ; nothing changed")
    return first


async def _apply(rt: Runtime, args: argparse.Namespace, account_of: Any) -> int:
    async with checked_pool(rt.database_url) as pool, pool.acquire() as conn:
        account: SipAccount = await account_of(conn)
        if args.remove:
            if not await remove_password(conn, account, actor=rt.actor):
                print(f"{account.label}: had no SIP password")
                return 1
            print(f"{account.label}: SIP password removed")
            return 0
        password = read_password(args.password_stdin)
        await set_password(conn, account, password, rt.config.sip_realm, actor=rt.actor)
    print(f"{account.label}: SIP password set (realm {rt.config.sip_realm})")
    return 0


async def cmd_staff_sip_password(rt: Runtime, args: argparse.Namespace) -> int:
    return await _apply(rt, args, lambda conn: staff_account(conn, args.staff_no))


async def cmd_sip_password(rt: Runtime, args: argparse.Namespace) -> int:
    if args.account != rt.config.sip_user:
        raise SipAccountError(f"{args.account!r} is not the service's SIP user ({rt.config.sip_user}, "
                              "HOTLINE_SIP_USER); staff passwords: `hotline staff sip-password 工号`")
    return await _apply(rt, args, lambda conn: service_account(conn, args.account))


def kamailio_database(url: str) -> tuple[str, dict[str, str]]:
    """The hotline's database URL as Kamailio's db_postgres takes it, and the environment it
    needs: a Unix socket ("?host=/dir") becomes an empty host and PGHOST; a password is left out
    (Kamailio's URL parser takes no escapes; give it to libpq in ~/.pgpass or PGPASSFILE)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SipAccountError(f"not a PostgreSQL URL: {parts.scheme}://…")
    env: dict[str, str] = {}
    host = parts.hostname or ""
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if socket_dir:
        env["PGHOST"] = socket_dir
        host = ""
    user = unquote(parts.username or "")
    port = f":{parts.port}" if parts.port else ""
    database = parts.path.lstrip("/")
    return f"postgres://{user + '@' if user else ''}{host}{port}/{database}", env


async def cmd_pbx(rt: Runtime, _args: argparse.Namespace) -> int:
    kam_url, env = kamailio_database(rt.database_url)
    print(f"KAMAILIO_DBURL={shlex.quote(kam_url)}")
    for key, value in env.items():
        print(f"{key}={shlex.quote(value)}")
    return 0
