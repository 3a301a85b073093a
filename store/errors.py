"""Errors the store raises for callers to report in one line."""


class StoreError(Exception):
    """Base of the store's errors; the message is meant for an operator."""


class StoreUnavailable(StoreError):
    """A configured PostgreSQL or Redis cannot be reached (or an embedded one cannot start)."""


class MigrationError(StoreError):
    """The migration files or the recorded schema history are inconsistent."""
