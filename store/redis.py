"""Redis (live state, fan-out) through redis-py's asyncio client."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from store.db import describe_target
from store.errors import StoreUnavailable, reason_of

CONNECT_TIMEOUT_S = 3.0


async def connect_redis(url: str) -> aioredis.Redis:
    """A client that has answered PING once; StoreUnavailable in one line otherwise."""
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S
    )
    try:
        await client.ping()
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        await client.aclose()
        where = url.removeprefix("unix://") if url.startswith("unix://") else describe_target(url)
        raise StoreUnavailable(f"cannot reach Redis at {where}: {reason_of(exc)}") from None
    return client
