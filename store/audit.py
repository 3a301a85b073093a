"""The audit log: one row per read of personal data, written in the reader's transaction.

Subjects name what was read or done, `<kind>:<id>`, so the audit page can search one resident's,
one recording's or one call's history. The names the console and the CLI write:

==================  ======================================================================
subject             what
==================  ======================================================================
resident:<id>       a resident's clear data (ID or phone number) was read — residents.id
call:<id>           a call's detail with clear data — call_records.id
recording:<id>      a call recording played or downloaded — the call's call_records.id
voicemail:<id>      a voicemail played — voicemails.id
export:calls        a CSV export of the call list (the filters go in `reason`)
center:<id|*>       a resident or referral listing of a center (`*`: every center) — CLI
sip:<username>      a SIP password set or removed — CLI
task:<id|*>         a task reassigned by hand (the reason in `reason`), or read by the CLI
                    (`*`: a task listing) — tasks.id
==================  ======================================================================

Build them with `subject(kind, id)` so a page and the search agree on the spelling.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

SUBJECT_KINDS = frozenset({"resident", "call", "recording", "voicemail", "export", "center", "sip", "task"})


def subject(kind: str, ident: int | str) -> str:
    """The audit subject of an object: subject("resident", 12) == "resident:12"."""
    if kind not in SUBJECT_KINDS:
        raise ValueError(f"unknown audit subject kind {kind!r}")
    return f"{kind}:{ident}"


async def record_read(
    conn: asyncpg.Connection, *, actor: str, action: str, subject: str, reason: str = "",
    claimed_actor: str | None = None,
) -> None:
    """`actor` is who the system knows (cli:<OS user>, later the signed-in staff member);
    `claimed_actor` a name the user gave (HOTLINE_ACTOR), kept as a claim only."""
    await conn.execute(
        "INSERT INTO audit_log (actor, action, subject, reason, claimed_actor) VALUES ($1, $2, $3, $4, $5)",
        actor, action, subject, reason, claimed_actor or None,
    )


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    reason: str
    claimed_actor: str | None


MAX_PAGE = 500


async def search_audit(
    pool: asyncpg.Pool | asyncpg.Connection, *, actor: str | None = None,
    subject: str | None = None, action: str | None = None, since: datetime | None = None,
    until: datetime | None = None, after_id: int | None = None, limit: int = 100,
    district_id: int | None = None,
) -> list[AuditRow]:
    """Audit rows, newest first (id descending), matching every filter given.

    Filters are exact (`actor` "staff:D001", `subject` "resident:12", `action` "resident.read");
    `since` is inclusive and `until` exclusive, on the time the row was written. Pages are keyset
    on id: pass the last row's id as `after_id` for the next page (an empty page is the end).
    Who may search at all is the capability "audit" (routing/scope.py), checked by the caller.
    `district_id`: only what that district's staff did, and what no staff member did (the
    operators' CLI, the system): a supervisor of one district never reads another's activity.
    """
    limit = max(1, min(int(limit), MAX_PAGE))
    where: list[str] = []
    args: list[object] = []

    def add(condition: str, value: object) -> None:
        args.append(value)
        where.append(condition.format(f"${len(args)}"))

    if actor is not None:
        add("actor = {}", actor)
    if subject is not None:
        add("subject = {}", subject)
    if action is not None:
        add("action = {}", action)
    if since is not None:
        add("at >= {}", since)
    if until is not None:
        add("at < {}", until)
    if after_id is not None:
        add("id < {}", after_id)
    if district_id is not None:
        add("(actor NOT LIKE 'staff:%' OR EXISTS (SELECT 1 FROM staff s"
            " WHERE 'staff:' || s.staff_no = actor AND s.district_id = {}))", district_id)
    args.append(limit)
    # Only constant condition text and $n placeholders are joined in; values travel as parameters.
    conditions = " AND ".join(where) or "true"
    sql = f"SELECT id, at, actor, action, subject, reason, claimed_actor FROM audit_log WHERE {conditions} ORDER BY id DESC LIMIT ${len(args)}"  # noqa: S608
    rows = await pool.fetch(sql, *args)
    return [AuditRow(**dict(r)) for r in rows]
