"""SIP accounts of the production PBX: one digest password per extension, stored as HA1 only.

Kamailio (docker/kamailio/kamailio-production.cfg) authenticates every REGISTER and every call
from a phone against the view sip_subscribers (routing/migrations/0016). A staff member's
account is the user part of their sip_uri (sip:1001@pbx → 1001); the service's own account is
HOTLINE_SIP_USER (`hotline`). The password itself is never stored nor logged: only
HA1 = MD5(user:realm:password) and HA1b = MD5(user@realm:realm:password), which is all a
registrar needs (and, being MD5 of a salted-by-realm string, still worth guarding: whoever
reads an HA1 can answer a challenge for that account, so the table is readable by the service
and the PBX only).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import asyncpg

from store.audit import record_read

MIN_LENGTH = 12
MAX_LENGTH = 128
_EXTENSION = re.compile(r"^sips?:([^@;:]+)@")
_USERNAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


class SipAccountError(Exception):
    """A password or account that cannot be set; the message says why (never the password)."""


@dataclass(frozen=True)
class SipAccount:
    username: str
    staff_id: int | None  # None: the service's own account
    label: str  # for messages: "王医生 (BH0001, extension 1001)" / "the service account hotline"


def ha1(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()


def ha1b(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}@{realm}:{realm}:{password}".encode()).hexdigest()


def check_password(username: str, password: str) -> None:
    """Refuse a password a phone could not type or an attacker would guess first."""
    if len(password) < MIN_LENGTH:
        raise SipAccountError(f"the password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise SipAccountError(f"the password must be at most {MAX_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in password) or password != password.strip():
        raise SipAccountError("the password has control characters or leading/trailing spaces")
    if username.lower() in password.lower():
        raise SipAccountError("the password must not contain the extension")
    if len(set(password)) < 5:
        raise SipAccountError("the password repeats too few different characters")


async def staff_account(conn: asyncpg.Connection, staff_no: str) -> SipAccount:
    row = await conn.fetchrow("SELECT id, name, sip_uri, left_on FROM staff WHERE staff_no = $1", staff_no)
    if row is None:
        raise SipAccountError(f"no staff member has the number {staff_no!r}")
    if row["left_on"] is not None:
        raise SipAccountError(f"{row['name']} ({staff_no}) left on {row['left_on']}")
    match = _EXTENSION.match(row["sip_uri"] or "")
    if match is None or not _USERNAME.match(match.group(1)):
        raise SipAccountError(f"{row['name']} ({staff_no}) has no SIP extension (sip_uri {row['sip_uri']!r})")
    ext = match.group(1)
    return SipAccount(ext, row["id"], f"{row['name']} ({staff_no}, extension {ext})")


async def service_account(conn: asyncpg.Connection, username: str) -> SipAccount:
    if not _USERNAME.match(username):
        raise SipAccountError(f"{username!r} is not a SIP user name (letters, digits, . _ + -)")
    taken = await conn.fetchval("SELECT staff_no FROM staff WHERE sip_extension(sip_uri) = $1 LIMIT 1",
                                username)
    if taken is not None:
        raise SipAccountError(f"{username} is the extension of staff member {taken}: "
                              f"use `hotline staff sip-password {taken}`")
    return SipAccount(username, None, f"the service account {username}")


async def set_password(conn: asyncpg.Connection, account: SipAccount, password: str, realm: str,
                       *, actor: str) -> None:
    """Store the account's HA1 hashes for `realm` (replacing any earlier password), audited."""
    check_password(account.username, password)
    async with conn.transaction():
        # One row per person: a changed extension replaces the old account's row.
        if account.staff_id is not None:
            await conn.execute("DELETE FROM sip_credentials WHERE staff_id = $1 AND username <> $2",
                               account.staff_id, account.username)
        existing = await conn.fetchrow("SELECT staff_id FROM sip_credentials WHERE username = $1",
                                       account.username)
        if existing is not None and existing["staff_id"] != account.staff_id:
            raise SipAccountError(f"extension {account.username} has credentials of another account; "
                                  "remove them first")
        await conn.execute(
            """INSERT INTO sip_credentials (username, domain, ha1, ha1b, staff_id)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (username) DO UPDATE
               SET domain = EXCLUDED.domain, ha1 = EXCLUDED.ha1, ha1b = EXCLUDED.ha1b, set_at = now()""",
            account.username, realm, ha1(account.username, realm, password),
            ha1b(account.username, realm, password), account.staff_id)
        await record_read(conn, actor=actor, action="sip_password.set", subject=f"sip:{account.username}",
                          reason=account.label)


async def remove_password(conn: asyncpg.Connection, account: SipAccount, *, actor: str) -> bool:
    """Remove the account's credentials (the phone can no longer register or call), audited."""
    async with conn.transaction():
        done = await conn.execute("DELETE FROM sip_credentials WHERE username = $1", account.username)
        if done == "DELETE 0":
            return False
        await record_read(conn, actor=actor, action="sip_password.remove",
                          subject=f"sip:{account.username}", reason=account.label)
    return True
