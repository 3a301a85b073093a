"""A district's own recordings of the hotline's prompts (ivr/migrations/0023), replacing the
shipped ones (ivr/prompts/) by name; restoring the default removes the row."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from ivr.prompt_store import PromptRefused, convert_prompt, file_sha256
from ivr.prompts import NAMES, PROMPT_DIR, use_overrides
from store import db
from telephony.prompts import Prompt

log = structlog.get_logger("ivr.prompts")


@dataclass(frozen=True)
class Override:
    name: str
    sha256: str
    source_name: str
    set_by: str
    set_at: datetime
    size: int


async def overrides(conn: asyncpg.Connection) -> dict[str, Override]:
    rows = await conn.fetch("SELECT name, sha256, source_name, set_by, set_at, octet_length(wav) AS size"
                            " FROM prompt_overrides")
    return {r["name"]: Override(r["name"], r["sha256"], r["source_name"], r["set_by"], r["set_at"],
                                r["size"]) for r in rows}


async def prompt_audio(conn: asyncpg.Connection, name: str) -> bytes:
    """The WAV that plays for `name` now: the district's own, else the shipped default."""
    if name not in NAMES:
        raise KeyError(name)
    wav: bytes | None = await conn.fetchval("SELECT wav FROM prompt_overrides WHERE name = $1", name)
    return wav if wav is not None else (PROMPT_DIR / f"{name}.wav").read_bytes()


async def is_resident_audio(conn: asyncpg.Connection, sha256: str) -> bool:
    """Whether a call recording or voicemail has these bytes (a greeting is played to everyone)."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM call_records WHERE recording_sha256 = $1)"
        " OR EXISTS (SELECT 1 FROM voicemails WHERE sha256 = $1)", sha256))


def converted(path: Path, shown: str) -> bytes:
    """The uploaded file as a prompt (blocking: run it in a thread)."""
    return convert_prompt(path, shown=shown)


async def set_override(conn: asyncpg.Connection, name: str, source: Path, *, source_name: str,
                       actor: str) -> str:
    """Replace prompt `name` with the audio of the file `source`; returns the stored SHA-256.
    PromptRefused (nothing changed) for what is not audio, too long, or a resident's call."""
    if name not in NAMES:
        raise KeyError(name)
    if await is_resident_audio(conn, await asyncio.to_thread(file_sha256, source)):
        raise PromptRefused(f"{source_name}: this is a call recording or voicemail; a resident's "
                            "call cannot become a prompt")
    wav = await asyncio.to_thread(converted, source, source_name)
    sha = hashlib.sha256(wav).hexdigest()
    await conn.execute(
        "INSERT INTO prompt_overrides (name, wav, sha256, source_name, set_by) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (name) DO UPDATE SET wav = EXCLUDED.wav, sha256 = EXCLUDED.sha256,"
        " source_name = EXCLUDED.source_name, set_by = EXCLUDED.set_by, set_at = now()",
        name, wav, sha, source_name[:200], actor)
    return sha


async def restore_default(conn: asyncpg.Connection, name: str) -> bool:
    """Back to the shipped prompt; False when it had no override."""
    done = await conn.execute("DELETE FROM prompt_overrides WHERE name = $1", name)
    return done != "DELETE 0"


CHANNEL = "hotline_prompts"  # NOTIFY of the table's trigger (0023)
RELOAD_EVERY_S = 600.0       # the safety net for a notification lost with its connection


class LivePrompts:
    """Keeps what a service node plays (ivr.prompts.use_overrides) equal to prompt_overrides:
    loaded at start, again within moments of a change made on any host (LISTEN), and every
    RELOAD_EVERY_S. While PostgreSQL is away the recordings last loaded go on playing."""

    def __init__(self, pool: asyncpg.Pool, database_url: str):
        self._pool = pool
        self._url = database_url
        self._changed = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._decoded: dict[str, tuple[str, Prompt]] = {}  # name → (sha256, prompt): decode once
        self.reloads = 0

    async def start(self) -> None:
        try:
            await self.reload()
        except Exception as exc:  # the shipped prompts play meanwhile; _run tries again
            log.warning("prompts.overrides_not_loaded", why=str(exc) or type(exc).__name__)
            self._changed.set()
        await self._listen()
        self._task = asyncio.create_task(self._run(), name="reload the district's prompts")

    async def _listen(self) -> None:
        try:
            self._listener = await db.connect(self._url)
            await self._listener.add_listener(CHANNEL, self._on_notify)
        except Exception as exc:
            log.warning("prompts.not_listening", why=str(exc) or type(exc).__name__,
                        reload_every_s=RELOAD_EVERY_S)
            self._listener = None

    def _on_notify(self, *_args: Any) -> None:
        self._changed.set()

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that lands as
            # the event is set (a NOTIFY as the service stops), and stop() then waited for ever —
            # a 120 s timeout in CI
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RELOAD_EVERY_S):
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self.reload()
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
            except Exception as exc:
                log.warning("prompts.overrides_not_reloaded", why=str(exc) or type(exc).__name__)
                await asyncio.sleep(5.0)
                self._changed.set()

    async def reload(self) -> None:
        async with self._pool.acquire() as conn:
            known = {r["name"]: r["sha256"] for r in await conn.fetch("SELECT name, sha256 FROM prompt_overrides")}
            missing = [n for n, sha in known.items() if self._decoded.get(n, ("", None))[0] != sha]
            rows = await conn.fetch("SELECT name, sha256, wav FROM prompt_overrides WHERE name = ANY($1::text[])",
                                    missing) if missing else []
        decoded = {n: v for n, v in self._decoded.items() if known.get(n) == v[0]}
        for r in rows:
            decoded[r["name"]] = (r["sha256"], await asyncio.to_thread(Prompt.from_bytes, r["name"], r["wav"]))
        self._decoded = decoded
        use_overrides({n: p for n, (_, p) in decoded.items() if n in NAMES})
        self.reloads += 1
        log.info("prompts.overrides_loaded", names=sorted(decoded))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
