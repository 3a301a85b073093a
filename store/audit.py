"""The audit log: one row per read of personal data, written in the reader's transaction."""

from __future__ import annotations

import asyncpg


async def record_read(
    conn: asyncpg.Connection, *, actor: str, action: str, subject: str, reason: str = ""
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, subject, reason) VALUES ($1, $2, $3, $4)",
        actor, action, subject, reason,
    )
