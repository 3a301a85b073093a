"""`hotline staff password BH0001`: a staff member's console password (web/accounts.py).

The password is typed twice at the terminal without echo (getpass), or read once from standard
input with --password-stdin (scripts); it never appears in arguments, logs or the database.
`--one-time-code` instead prints a code for a first sign-in or a reset: it replaces the old
password, and signing in with it only lets the person choose a new one.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from hotline.cli_common import NotFound
from hotline.runtime import Runtime, checked_pool


class PasswordCliError(Exception):
    """The password could not be set; the message says why (exit code 2, nothing changed)."""


def add_staff_parser(staff_actions: Any) -> None:
    """`staff password`, under the existing `staff` command."""
    p = staff_actions.add_parser("password", help="set a staff member's console password "
                                                  "(typed twice), or issue a one-time code")
    p.add_argument("staff_no", help="staff number (工号)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--one-time-code", action="store_true",
                     help="print a one-time code instead (valid 3 days; the first sign-in with it "
                          "must choose a new password; the old password stops working)")
    how.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input (no prompt)")


def read_new_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if not sys.stdin.isatty():
        raise PasswordCliError("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("new console password: ")
    if getpass.getpass("again: ") != first:
        raise PasswordCliError("the two passwords differ; nothing changed")
    return first


async def cmd_staff_password(rt: Runtime, args: argparse.Namespace) -> int:
    from web.accounts import Accounts, NoSuchStaff, PasswordRejected

    async with checked_pool(rt.database_url) as pool:
        # No Redis: setting a password or issuing a code does not touch the sign-in throttle.
        accounts = Accounts(pool, None, tz=rt.config.tz)
        try:
            staff_id = await accounts.staff_id_of(args.staff_no)
            viewer = await accounts.viewer(staff_id)
            if viewer is None:
                raise NoSuchStaff(f"{args.staff_no} has left: no console account")
            if args.one_time_code:
                code = await accounts.issue_one_time_code(staff_id, actor=rt.actor,
                                                          claimed_actor=rt.claimed_actor)
                print(f"{viewer.name} ({viewer.staff_no}): one-time code {code} "
                      "(valid 3 days; the first sign-in with it sets a new password)")
                return 0
            password = read_new_password(args.password_stdin)
            await accounts.set_password(staff_id, password, actor=rt.actor,
                                        claimed_actor=rt.claimed_actor)
        except NoSuchStaff as exc:
            raise NotFound(str(exc)) from None
        except PasswordRejected as exc:
            raise PasswordCliError(f"password refused, nothing changed: {exc}") from None
    print(f"{viewer.name} ({viewer.staff_no}): console password set")
    return 0
