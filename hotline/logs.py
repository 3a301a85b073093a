"""structlog setup: JSON lines in production, readable in a terminal, PII scrubbed from both.

Code is expected to log masked values already (store.pii.mask_*); the scrubber is the safety net
that catches an ID-card or phone number that slipped into an event anyway.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from store.pii import mask_id_number

# 18-character resident ID (17 digits + digit/X) and mainland mobile numbers, not inside longer
# digit runs (call ids, timestamps in ms).
_ID_NUMBER = re.compile(r"(?<![0-9])([1-9][0-9]{5})[0-9]{8}([0-9]{3}[0-9Xx])(?![0-9])")
_MOBILE = re.compile(r"(?<![0-9])(1[3-9][0-9])[0-9]{4}([0-9]{4})(?![0-9])")


def scrub(text: str) -> str:
    # the same mask as listings: a log line must not show more of an ID number (docs/privacy.md)
    text = _ID_NUMBER.sub(lambda m: mask_id_number(m.group(0)), text)
    return _MOBILE.sub(r"\1****\2", text)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub_value(v) for v in value)
    return value


def scrub_pii(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {key: _scrub_value(value) for key, value in event_dict.items()}


class _ClosedPipeTolerant:
    """A log stream that stops writing, quietly, once its reader has gone.

    `make demo 2>&1 | tee log` and Ctrl-C: tee dies first, and every later log line of the
    stopping service raised BrokenPipeError in whatever code logged it, cutting its shutdown short.
    """

    def __init__(self, stream: Any):
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> None:
        if not self._gone:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._gone = True

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone = True

    def isatty(self) -> bool:
        return bool(getattr(self._stream, "isatty", lambda: False)())


def configure_logging(log_format: str = "auto", level: str = "info", stream: Any = None) -> None:
    stream = _ClosedPipeTolerant(stream or sys.stderr)
    if log_format == "auto":
        log_format = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub_pii,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
