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
with back-off.
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
SELECT id FROM staff
WHERE sip_extension(sip_uri) = $1 AND (left_on IS NULL OR left_on > current_date)
"""


class RegistrationListener:
    """LISTEN 'sip_registrations' and clear the offline mark of whoever just registered."""

    def __init__(self, pool: asyncpg.Pool, database_url: str, presence: Presence):
        self._pool = pool
        self._url = database_url
        self._presence = presence
        self._task: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[None]] = set()
        self._listening = asyncio.Event()
        self._seen = asyncio.Condition()
        # the user names of the last registrations acted on, oldest first (bounded)
        self.handled: deque[str] = deque(maxlen=1024)

    async def start(self, timeout_s: float = 5.0) -> bool:
        """Start listening; True once the LISTEN is in place (else it keeps trying meanwhile)."""
        self._task = asyncio.create_task(self._listen_forever(), name="sip registrations")
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
        task = asyncio.get_running_loop().create_task(self._registered(username))
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def _registered(self, username: str) -> None:
        try:
            ids = [r["id"] for r in await self._pool.fetch(_STAFF_SQL, username)]
            for staff_id in ids:
                if await self._presence.registered(staff_id):
                    log.info("presence.registered_again", staff_id=staff_id, extension=username)
        except Exception as exc:  # a registration we could not act on: the mark expires anyway
            log.warning("registrations.not_applied", extension=username, error=str(exc))
        async with self._seen:
            self.handled.append(username)
            self._seen.notify_all()

    async def wait_handled(self, username: str, timeout_s: float) -> None:
        """Until a registration of `username` has been acted on (for tests and diagnostics)."""
        async with asyncio.timeout(timeout_s), self._seen:
            await self._seen.wait_for(lambda: username in self.handled)

    async def stop(self) -> None:
        for task in [self._task, *self._work]:
            if task is not None:
                task.cancel()
        for task in [self._task, *self._work]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None
