"""The audit log: one row per read of personal data, written in the reader's transaction."""

from __future__ import annotations

import asyncpg


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
