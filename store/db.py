"""PostgreSQL connections through asyncpg, with failures turned into one-line StoreUnavailable."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import asyncpg

from store.errors import StoreUnavailable, reason_of

CONNECT_TIMEOUT_S = 5.0

_UNREACHABLE = (
    OSError,
    TimeoutError,
    socket.gaierror,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


# Beyond what connecting raises: PostgreSQL going away under a session (a fast shutdown, a
# crash, a dropped network) or refusing new ones for now.
_GONE = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
    asyncpg.InterfaceError,  # the connection or the pool is closed
    StoreUnavailable,
)


def is_unreachable(exc: BaseException) -> bool:
    """PostgreSQL is away (cannot be reached, went away mid-statement, shutting down), as
    opposed to a statement it refused — a bug or bad data."""
    return isinstance(exc, _UNREACHABLE + _GONE)


def describe_target(url: str) -> str:
    """Where a URL points, without credentials: host:port/db or the socket directory."""
    parts = urlsplit(url)
    host = parts.hostname or parse_qs(parts.query).get("host", ["(local socket)"])[0]
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or ''}"


def _unreachable(url: str, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"cannot reach PostgreSQL at {describe_target(url)}: {reason_of(exc)}")


async def connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except _UNREACHABLE as exc:
        raise _unreachable(url, exc) from None


async def _reset_if_needed(conn: asyncpg.Connection) -> None:
    """What a connection needs before going back to the pool: a rollback if a transaction was
    left open. asyncpg's default reset (advisory unlock, CLOSE ALL, UNLISTEN *, RESET ALL) is a
    round trip on every release — about 100 µs of each routing decision (bench/route) — and
    guards against state our pooled connections never take: advisory locks and LISTEN run on
    dedicated connections (store.migrate, routing.snapshot), and nothing issues SET."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT_S,
            reset=_reset_if_needed,
        )
    except _UNREACHABLE as exc:
        raise _unreachable(url, exc) from None


@asynccontextmanager
async def connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(url)
    try:
        yield conn
    finally:
        await conn.close()
