"""Callers waiting for a chain whose people are all busy: their order, shared by every node.

A queue is a Redis sorted set per chain (the people the caller waits for), scored by the time
the caller joined, so a caller's position is their rank whichever node holds the call. Members
carry an expiry in their own hash so a node that dies does not leave ghosts ahead of everyone:
a member whose heartbeat is older than STALE_S is dropped when positions are read.

Without Redis the queue is this node's own (an in-memory list): positions are then right for
the calls this node holds, which is what a single-node district has anyway.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog
from redis.exceptions import RedisError

from recordings.live import QUEUE_PREFIX

log = structlog.get_logger("ivr.queue")

PREFIX = QUEUE_PREFIX  # one definition, shared with the live board's reader
# A waiting call refreshes its heartbeat every few seconds; older members are ghosts.
STALE_S = 30.0


def queue_key(people: Sequence[int], service: str) -> str:
    """Callers waiting for the same people wait in the same queue."""
    return f"{service}:{','.join(str(i) for i in sorted(set(people))) or 'desk'}"


class CallQueue:
    def __init__(self, redis: Any | None):
        self._redis = redis
        self._local: dict[str, dict[str, float]] = {}  # key -> call_id -> joined (without Redis)

    async def join(self, key: str, call_id: str) -> None:
        now = time.time()
        self._local.setdefault(key, {})[call_id] = now
        if self._redis is not None:
            try:
                await self._redis.zadd(PREFIX + key, {call_id: now}, nx=True)
                await self._redis.hset(PREFIX + key + ":beat", call_id, now)
            except (RedisError, OSError) as exc:
                log.warning("queue.redis_unavailable", why=str(exc))

    async def ahead(self, key: str, call_id: str) -> int:
        """How many callers are ahead of this one (and keep this one's heartbeat fresh)."""
        now = time.time()
        if self._redis is not None:
            try:
                beats = await self._redis.hgetall(PREFIX + key + ":beat")
                stale = [m for m, t in beats.items() if now - float(t) > STALE_S
                         and (m.decode() if isinstance(m, bytes) else m) != call_id]
                if stale:
                    await self._redis.zrem(PREFIX + key, *stale)
                    await self._redis.hdel(PREFIX + key + ":beat", *stale)
                await self._redis.hset(PREFIX + key + ":beat", call_id, now)
                rank = await self._redis.zrank(PREFIX + key, call_id)
                if rank is not None:
                    return int(rank)
            except (RedisError, OSError) as exc:
                log.warning("queue.redis_unavailable", why=str(exc))
        waiting = self._local.get(key, {})
        mine = waiting.get(call_id, now)
        return sum(1 for t in waiting.values() if t < mine)

    async def leave(self, key: str, call_id: str) -> None:
        self._local.get(key, {}).pop(call_id, None)
        if self._redis is not None:
            try:
                await self._redis.zrem(PREFIX + key, call_id)
                await self._redis.hdel(PREFIX + key + ":beat", call_id)
            except (RedisError, OSError) as exc:
                log.warning("queue.redis_unavailable", why=str(exc))
