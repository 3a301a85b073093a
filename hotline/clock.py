"""The service's clock: the real time, or a configured instant that then runs at real speed.

Routing depends on the time of day, and tests (and demos in office hours) need to place a call
"on a weekday at 10:00" or "at 21:00" through the real call path. `clock_start` in the
configuration sets the instant the clock shows when the service starts; from then on it
advances with the machine's monotonic clock. Unset, it is the wall clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, start: datetime | None = None):
        if start is not None and start.tzinfo is None:
            raise ValueError("the clock's start instant needs a time zone offset")
        self._start = start
        self._started = time.monotonic()

    @property
    def shifted(self) -> bool:
        return self._start is not None

    def now(self) -> datetime:
        if self._start is None:
            return datetime.now(UTC)
        return self._start + timedelta(seconds=time.monotonic() - self._started)
