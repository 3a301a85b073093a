"""`hotline web`: the console alone (a console host beside the service nodes), and the console
that `hotline serve` runs beside SIP."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from hotline.clock import Clock
from hotline.runtime import Runtime, checked_pool
from store import embedded
from store.errors import reason_of
from store.redis import CONNECT_TIMEOUT_S
from web.server import ConsoleSite, console_site

log = structlog.get_logger("hotline.web")

# The console's own connections: page queries are short; a few cover many viewers.
WEB_POOL_SIZE = 8


def add_parsers(sub: Any) -> None:
    sub.add_parser("web", help="run the web console alone (HOTLINE_WEB_HOST:HOTLINE_WEB_PORT)")


@asynccontextmanager
async def console_beside(rt: Runtime, pool: asyncpg.Pool, redis_url: str, clock: Clock
                         ) -> AsyncIterator[ConsoleSite]:
    config = rt.config
    # Not connect_redis (which insists on a PING): the calls must not wait for the console, and
    # the console answers 503 until Redis is back (sessions live there).
    redis = aioredis.Redis.from_url(redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                    socket_timeout=CONNECT_TIMEOUT_S)
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        log.warning("web.redis_unreachable", why=reason_of(exc),
                    effect="the console answers 503 until Redis is back; calls go on")
    try:
        async with console_site(pool=pool, redis=redis, vault=rt.vault, tz=config.tz, now=clock.now,
                                host=config.web_host, port=config.web_port,
                                secure_cookie=config.web_secure_cookie,
                                idle_timeout_s=config.web_idle_timeout_s,
                                area_code=config.area_code, redis_url=redis_url) as site:
            yield site
    finally:
        await redis.aclose()


async def cmd_web(rt: Runtime, _args: argparse.Namespace) -> int:
    config = rt.config
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    redis_url = config.redis_url or embedded.ensure_redis(config.data_dir)
    async with checked_pool(rt.database_url, max_size=WEB_POOL_SIZE) as pool, \
            console_beside(rt, pool, redis_url, Clock(config.clock_start_at)) as site:
        print(f"hotline: console at {site.url}", flush=True)
        await stop.wait()
    return 0
