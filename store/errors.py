"""Errors the store raises for callers to report in one line."""

import os


class StoreError(Exception):
    """Base of the store's errors; the message is meant for an operator."""


class StoreUnavailable(StoreError):
    """A configured PostgreSQL or Redis cannot be reached (or an embedded one cannot start)."""


class MigrationError(StoreError):
    """The migration files or the recorded schema history are inconsistent."""


def reason_of(exc: BaseException) -> str:
    """One short line saying why a connection failed: the OS reason when there is one.

    Drivers wrap socket errors in their own texts ("Connect call failed ('127.0.0.1', 1)",
    "Error 111 connecting to …"); the operator needs "Connection refused".
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno)
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
