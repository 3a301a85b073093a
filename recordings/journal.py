"""A local, append-only, fsynced journal of call events, for while PostgreSQL is away.

The journal lives in a directory of this node (DATA_DIR/journal, 0700). Events are JSON objects,
one per line (UTF-8, newline-terminated), appended to the node's *active segment*; `append`
returns only when the line is on disk (written and fsynced). Events appended while a fsync is
running share the next one (group commit), so concurrent calls do not queue one fsync each.

Segments are replayed (recordings.call_log.Replayer) once they are *sealed*: the writer closes
its active segment and later events start a new one. A segment is removed only after every one
of its events is committed in PostgreSQL.

Crash safety:
- A crash mid-write leaves at most the last line unfinished (no newline): that event was never
  acknowledged to its caller. Reading ignores it and reports it (`torn_tail`); the segment is
  then kept aside (`kept/`) rather than deleted, so nothing a human might want is destroyed.
- A line that does not decode in the middle of a segment (disk damage, an edit by hand) is
  skipped the same way and the segment kept aside.
- A new process never appends to an old segment: each run starts a fresh one.
- The active segment is held under an exclusive flock by its writer; whoever replays a segment
  takes the same lock first, so a segment still being written (by this or another process on
  the same data directory) is never replayed or removed under the writer's feet.

The journal holds no personal data in clear: calling numbers are kept as the vault's ciphertext,
lookup hash and mask, as in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUFFIX = ".jsonl"
KEPT = "kept"
# Required in every event (recordings.call_log writes them).
REQUIRED = ("id", "kind", "call_id")


class JournalError(Exception):
    """The journal could not make an event durable (disk full, permissions): the caller must not
    believe it kept."""


@dataclass
class Segment:
    """A segment as read back for replay."""

    path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    torn_tail: bytes = b""  # an unfinished last line (a crash mid-write)
    bad_lines: list[int] = field(default_factory=list)  # 1-based numbers of undecodable lines

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def damaged(self) -> bool:
        return bool(self.torn_tail) or bool(self.bad_lines)


def read_segment(path: Path) -> Segment:
    data = path.read_bytes()
    segment = Segment(path)
    lines = data.split(b"\n")
    segment.torn_tail = lines.pop()  # b"" when the file ends with a newline, as it should
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except ValueError:
            segment.bad_lines.append(number)
            continue
        if not isinstance(event, dict) or not all(isinstance(event.get(k), str) and event[k] for k in REQUIRED):
            segment.bad_lines.append(number)
            continue
        segment.events.append(event)
    return segment


def encode(event: dict[str, Any]) -> bytes:
    # json.dumps escapes newlines inside strings: one event is exactly one line
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n").encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)  # whatever the umask: it holds call data
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_bytes = 0
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._io = asyncio.Lock()
        # Counters for logs and benchmarks.
        self.appended = 0
        self.fsyncs = 0

    # -- writing ------------------------------------------------------------------------------

    async def append(self, event: dict[str, Any]) -> None:
        """Make `event` durable: when this returns it is written and fsynced. Raises JournalError
        when the disk refuses it."""
        line = encode(event)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="journal fsync")
        # Shielded: a call cancelled mid-append (shutdown) does not un-write its event.
        await asyncio.shield(done)

    async def _flush(self) -> None:
        async with self._io:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await asyncio.to_thread(self._write, [line for line, _ in batch])
                except OSError as exc:
                    error = JournalError(f"cannot write the call journal in {self.directory}: {exc}")
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    def _write(self, lines: list[bytes]) -> None:
        if self._fd is None:
            self._open_segment()
        assert self._fd is not None
        data = memoryview(b"".join(lines))
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        os.fsync(self._fd)
        self._active_bytes += sum(len(line) for line in lines)
        self.appended += len(lines)
        self.fsyncs += 1

    def _open_segment(self) -> None:
        # Names sort in creation order; the random part keeps two processes (or two nodes on
        # one directory) apart even within the same microsecond.
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # mine until sealed
        _fsync_dir(self.directory)  # the new name survives a crash too
        self._fd, self._active, self._active_bytes = fd, path, 0

    async def seal(self) -> Path | None:
        """Close the active segment (after the appends in flight) so it can be replayed; the next
        event starts a new one. Returns the sealed segment, or None when none was active."""
        async with self._io:
            if self._fd is None:
                return None
            os.close(self._fd)  # releases the flock
            sealed, self._fd, self._active = self._active, None, None
            return sealed

    async def close(self) -> None:
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        await self.seal()

    # -- reading ------------------------------------------------------------------------------

    @property
    def active(self) -> Path | None:
        return self._active

    def sealed_segments(self) -> list[Path]:
        """Every segment in the directory but the one this journal is writing, oldest first
        (segments another process is still writing are skipped when claimed)."""
        return sorted(p for p in self.directory.glob(f"*{SUFFIX}") if p != self._active)

    def holds_events(self) -> bool:
        """Anything not yet replayed: an active segment with events, or a sealed one."""
        return (self._active is not None and self._active_bytes > 0) or bool(self._pending) \
            or bool(self.sealed_segments())

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[bool]:
        """Hold the segment's lock for a replay; yields False when someone else holds it (its
        writer, or another replayer)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # replayed and removed meanwhile
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield path.exists()
        finally:
            os.close(fd)

    def remove(self, path: Path) -> None:
        """A replayed segment: every event of it is committed. Call while holding its claim."""
        path.unlink()
        _fsync_dir(self.directory)

    def keep_aside(self, path: Path) -> Path:
        """A replayed segment with damaged lines, moved out of the way for a human to look at."""
        kept = self.directory / KEPT
        kept.mkdir(mode=0o700, exist_ok=True)
        target = kept / path.name
        path.rename(target)
        _fsync_dir(self.directory)
        return target
