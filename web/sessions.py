"""Console sessions, server-side in Redis so every console node shares them.

The cookie carries only a random token; Redis keeps, under the token's SHA-256 (a dump of Redis
does not hand out live cookies), who signed in, the CSRF token of the session and when it started.
Each request refreshes the key's TTL: a session unused for the idle timeout is gone by itself. A
per-staff set lists the sessions of a person, so a password change ends the others.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

SESSION_PREFIX = "console:session:"
STAFF_SESSIONS_PREFIX = "console:staff-sessions:"
# However active, a session ends after this long (a shared ward PC left signed in).
MAX_AGE_S = 12 * 3600


@dataclass(frozen=True)
class Session:
    token_hash: str
    staff_id: int
    csrf: str
    started: float
    must_change: bool = False  # signed in with a one-time code: only the password page is open


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, redis: aioredis.Redis, *, idle_s: float = 1800.0):
        self._redis = redis
        self.idle_s = idle_s

    async def create(self, staff_id: int, *, must_change: bool = False) -> tuple[str, Session]:
        """A new session; returns the cookie token (shown once, never stored) and the session."""
        token = secrets.token_urlsafe(32)
        session = Session(_hash(token), staff_id, secrets.token_urlsafe(32), time.time(), must_change)
        value = json.dumps({"staff_id": staff_id, "csrf": session.csrf, "started": session.started,
                            "must_change": must_change})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(SESSION_PREFIX + session.token_hash, value, ex=int(self.idle_s))
            pipe.sadd(STAFF_SESSIONS_PREFIX + str(staff_id), session.token_hash)
            pipe.expire(STAFF_SESSIONS_PREFIX + str(staff_id), MAX_AGE_S)
            await pipe.execute()
        return token, session

    async def load(self, token: str) -> Session | None:
        """The live session of a cookie, its idle clock restarted; None if unknown or expired."""
        if not token or len(token) > 100:
            return None
        key = SESSION_PREFIX + _hash(token)
        raw = await self._redis.getex(key, ex=int(self.idle_s))
        if raw is None:
            return None
        data = json.loads(raw)
        if time.time() - data["started"] > MAX_AGE_S:
            await self._redis.delete(key)
            return None
        return Session(_hash(token), int(data["staff_id"]), data["csrf"], data["started"],
                       bool(data.get("must_change")))

    async def end(self, session: Session) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(SESSION_PREFIX + session.token_hash)
            pipe.srem(STAFF_SESSIONS_PREFIX + str(session.staff_id), session.token_hash)
            await pipe.execute()

    async def end_all(self, staff_id: int, *, keep: Session | None = None) -> int:
        """End every session of a person but `keep`; how many were ended."""
        key = STAFF_SESSIONS_PREFIX + str(staff_id)
        hashes = [h.decode() if isinstance(h, bytes) else h for h in await self._redis.smembers(key)]
        doomed = [h for h in hashes if keep is None or h != keep.token_hash]
        if not doomed:
            return 0
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(SESSION_PREFIX + h for h in doomed))
            pipe.srem(key, *doomed)
            results = await pipe.execute()
        return int(results[0])

    async def replace(self, old: Session, *, must_change: bool = False) -> tuple[str, Session]:
        """A fresh token for the same person (after a password change: no fixation)."""
        await self.end(old)
        return await self.create(old.staff_id, must_change=must_change)
