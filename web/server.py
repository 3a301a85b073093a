"""Serving the console: beside SIP in `hotline serve`, or alone in `hotline web`.

Any number of console processes and service nodes share one PostgreSQL and one Redis: sessions,
presence and the live feed are in Redis, everything else in PostgreSQL, so a console host needs
no SIP and a service node needs no browser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, tzinfo

import asyncpg
import redis.asyncio as aioredis
import structlog
from aiohttp import web

from routing.presence import Presence
from store.pii import PiiVault
from web.app import Console, create_app
from web.sessions import SessionStore

# Presence is tuned for calls (routing: 50 ms a Redis operation, then it rings regardless). A page a
# person is reading may wait longer, and should: under load a 50 ms read shows staff as 未知.
PRESENCE_TIMEOUT_S = 1.0

log = structlog.get_logger("web.server")


@dataclass
class ConsoleSite:
    app: web.Application
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


@asynccontextmanager
async def console_site(*, pool: asyncpg.Pool, redis: aioredis.Redis, vault: PiiVault, tz: tzinfo,
                       now: Callable[[], datetime], host: str, port: int,
                       secure_cookie: bool = False, idle_timeout_s: float = 1800.0,
                       area_code: str = "022", redis_url: str | None = None) -> AsyncIterator[ConsoleSite]:
    """The console listening on host:port (port 0: any free port) until the block ends."""
    from web.accounts import Accounts

    ctx = Console(pool=pool, redis=redis, vault=vault, tz=tz, now=now,
                  sessions=SessionStore(redis, idle_s=idle_timeout_s),
                  accounts=Accounts(pool, redis), presence=Presence(redis, tz=tz, now=now, timeout_s=PRESENCE_TIMEOUT_S),
                  secure_cookie=secure_cookie, area_code=area_code, redis_url=redis_url)
    app = create_app(ctx)
    # access_log off: request lines carry query strings (a phone number searched for); the
    # console logs what it does itself, masked.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = port
    server = site._server  # the port actually bound when 0 was asked
    if server is not None and server.sockets:  # type: ignore[attr-defined]
        bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    running = ConsoleSite(app, runner, host, bound)
    log.info("web.started", url=running.url)
    try:
        yield running
    finally:
        await runner.cleanup()
        log.info("web.stopped")
