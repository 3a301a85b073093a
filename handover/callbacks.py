"""Callbacks owed: a call no human answered becomes one open task, due 8 hours after the call.

A callback is the first kind of task (handover/tasks.py): opening one, and attaching a repeat
call to it, are events of its history like every other change.

One open task per caller (the resident; the number when the caller is unknown): a repeat missed
call while it is open attaches to it and keeps the first deadline — the promise runs from the
first call nobody answered, even when an earlier call is written later (replayed from the call
journal after PostgreSQL was away). The rule holds across service nodes because PostgreSQL enforces it
(a unique index over open tasks) and the upsert below is one statement.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from handover.tasks import write_event

CALLBACK_WINDOW = timedelta(hours=8)


@dataclass(frozen=True)
class OwedCallback:
    task_id: int
    created: bool  # False: the missed call attached to a task already open
    due_at: datetime


def caller_key(resident_id: int | None, number_hash: bytes) -> str:
    return f"resident:{resident_id}" if resident_id is not None else f"number:{number_hash.hex()}"


class Callbacks:
    # `pool` may be a single connection too (the call journal's replay, in its transaction).
    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection):
        self._pool = pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        if isinstance(self._pool, asyncpg.Pool):
            async with self._pool.acquire() as conn, conn.transaction():
                yield conn
        else:
            async with self._pool.transaction():
                yield self._pool

    async def owe_for_missed_call(
        self, *, call_record_id: int, resident_id: int | None, number_hash: bytes,
        number_encrypted: bytes, number_masked: str, owner_staff_id: int | None,
        missed_at: datetime,
    ) -> OwedCallback:
        """Open the caller's callback task, or attach this call to the one already open.

        Safe to repeat for the same call (recovery after a crash attaches it once).
        """
        async with self._transaction() as conn:
            attached = await conn.fetchrow(
                """SELECT t.id, t.due_at FROM callback_calls cc JOIN tasks t ON t.id = cc.task_id
                    WHERE cc.call_record_id = $1""", call_record_id)
            if attached is not None:  # a replay: the call is with its task already
                return OwedCallback(attached["id"], False, attached["due_at"])
            row = await conn.fetchrow(
                """INSERT INTO tasks (kind, caller_key, resident_id, caller_number_hash,
                        caller_number_enc, caller_number_masked, owner_staff_id, opened_at, due_at)
                   VALUES ('callback', $1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (caller_key) WHERE status = 'open' AND kind = 'callback'
                   DO UPDATE SET opened_at = LEAST(tasks.opened_at, EXCLUDED.opened_at),
                                 due_at = LEAST(tasks.due_at, EXCLUDED.due_at),
                                 version = tasks.version + 1
                   RETURNING id, due_at, version, (xmax = 0) AS created""",
                caller_key(resident_id, number_hash), resident_id, number_hash, number_encrypted,
                number_masked, owner_staff_id, missed_at, missed_at + CALLBACK_WINDOW,
            )
            await write_event(
                conn, row["id"], row["version"], at=missed_at,
                event="opened" if row["created"] else "call_attached",
                owner_to=owner_staff_id if row["created"] else None, reason="missed call",
                detail={"call_record_id": call_record_id, "due_at": row["due_at"].isoformat()})
            await conn.execute(
                "INSERT INTO callback_calls (task_id, call_record_id) VALUES ($1, $2)",
                row["id"], call_record_id,
            )
        return OwedCallback(row["id"], row["created"], row["due_at"])

    async def attach_voicemail(self, *, task_id: int, call_record_id: int, path: str, seconds: float,
                               sha256: str, recorded_at: datetime) -> int:
        """Keep the caller's message with the task (once per call: a replay attaches nothing new)."""
        return await self._pool.fetchval(
            """INSERT INTO voicemails (task_id, call_record_id, path, seconds, sha256, recorded_at)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (call_record_id) DO UPDATE SET call_record_id = EXCLUDED.call_record_id
               RETURNING id""",
            task_id, call_record_id, path, seconds, sha256, recorded_at)

    async def attach_voicemail_to_call(self, *, call_record_id: int, path: str, seconds: float,
                                       sha256: str, recorded_at: datetime) -> int | None:
        """The message of a call, kept with the task the call is attached to (None: the call owes
        no callback, nothing to attach to). Once per call, like attach_voicemail."""
        return await self._pool.fetchval(
            """INSERT INTO voicemails (task_id, call_record_id, path, seconds, sha256, recorded_at)
               SELECT task_id, $1, $2, $3, $4, $5 FROM callback_calls WHERE call_record_id = $1
               ON CONFLICT (call_record_id) DO UPDATE SET call_record_id = EXCLUDED.call_record_id
               RETURNING id""",
            call_record_id, path, seconds, sha256, recorded_at)
