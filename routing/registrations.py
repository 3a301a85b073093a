"""Registrations learned from the PBX: a phone that registers is ringable at once.

A dial that comes back unreachable marks the person offline for OFFLINE_TTL_S (presence.py), so
the next calls skip them without waiting on a dead phone. When the phone registers again that
mark must go at once, not two minutes later. The PBX tells us: Kamailio writes every binding it
saves into the `location` table of this database (usrloc db_mode 1), and a trigger on it
(routing/migrations/0016) sends NOTIFY 'sip_registrations' with the registered user name. Every
node LISTENs on a connection of its own and clears the mark of the staff with that extension
(`Presence.registered`): within milliseconds of the PBX's 200 OK.

Best effort: without the listener (no database connection, a PBX that writes nothing) the
offline mark simply expires by itself, as before. A dropped listener connection is reopened
with back-off, and every binding in `location` then counts as a registration (what registered
while nobody listened). Notifications are coalesced: one worker, one query per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import asyncpg
import structlog

from routing.presence import Presence
from store import db

log = structlog.get_logger("routing.registrations")

CHANNEL = "sip_registrations"
RECONNECT_MAX_S = 30.0

# Staff who answer on this extension and still work here (sip_extension: migration 0016).
_STAFF_SQL = """
SELECT id, sip_extension(sip_uri) AS ext FROM staff
WHERE sip_extension(sip_uri) = ANY($1::text[]) AND (left_on IS NULL OR left_on > current_date)
"""
# Distinct user names waiting to be acted on; beyond this a storm's extra names are dropped
# (counted): their marks expire by themselves.
MAX_PENDING = 10_000


class RegistrationListener:
    """LISTEN 'sip_registrations' and clear the offline mark of whoever just registered."""

    def __init__(self, pool: asyncpg.Pool, database_url: str, presence: Presence):
        self._pool = pool
        self._url = database_url
        self._presence = presence
        self._task: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._pending: dict[str, None] = {}  # insertion-ordered set
        self._wake = asyncio.Event()
        self.dropped = 0
        self._listening = asyncio.Event()
        self._seen = asyncio.Condition()
        # the user names of the last registrations acted on, oldest first (bounded)
        self.handled: deque[str] = deque(maxlen=1024)

    async def start(self, timeout_s: float = 5.0) -> bool:
        """Start listening; True once the LISTEN is in place (else it keeps trying meanwhile)."""
        self._task = asyncio.create_task(self._listen_forever(), name="sip registrations")
        self._worker = asyncio.create_task(self._work_forever(), name="sip registrations: presence")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._listening.wait()
        return self._listening.is_set()

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    async def _listen_forever(self) -> None:
        delay = 1.0
        while True:
            lost = asyncio.Event()
            try:
                conn = await db.connect(self._url)
            except Exception as exc:
                log.warning("registrations.not_listening", why=str(exc), retry_in_s=delay,
                            effect="a phone marked unreachable stays skipped until the mark expires")
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                # What registered while nobody listened (start-up, a lost connection): every
                # binding the PBX holds now counts as a registration.
                for row in await conn.fetch("SELECT DISTINCT username FROM location"):
                    self._on_notify(conn, 0, CHANNEL, row["username"])
                self._listening.set()
                delay = 1.0
                await lost.wait()
                log.warning("registrations.listener_lost", reconnect_in_s=delay)
            finally:
                self._listening.clear()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)
            await asyncio.sleep(delay)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, username: str) -> None:
        # Coalesced: a storm of registrations (a PBX restart re-registers every phone at once)
        # is one worker, one query per batch and one pooled connection, never a task each
        # starving the calls' pool. A name already waiting is not queued twice.
        if len(self._pending) < MAX_PENDING:
            self._pending[username] = None
        else:
            self.dropped += 1
        self._wake.set()

    async def _work_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = list(self._pending), {}
            if batch:
                await self._registered(batch)

    async def _registered(self, usernames: list[str]) -> None:
        try:
            rows = await self._pool.fetch(_STAFF_SQL, usernames)
            for row in rows:
                if await self._presence.registered(row["id"]):
                    log.info("presence.registered_again", staff_id=row["id"], extension=row["ext"])
        except Exception as exc:  # registrations we could not act on: the marks expire anyway
            log.warning("registrations.not_applied", extensions=len(usernames), error=str(exc))
        async with self._seen:
            self.handled.extend(usernames)
            self._seen.notify_all()

    async def wait_handled(self, username: str, timeout_s: float) -> None:
        """Until a registration of `username` has been acted on (for tests and diagnostics)."""
        async with asyncio.timeout(timeout_s), self._seen:
            await self._seen.wait_for(lambda: username in self.handled)

    async def stop(self) -> None:
        for task in (self._task, self._worker):
            if task is not None:
                task.cancel()
        for task in (self._task, self._worker):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._worker = None
