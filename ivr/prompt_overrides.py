"""A district's own recordings of the hotline's prompts (ivr/migrations/0023), replacing the
shipped ones (ivr/prompts/) by name; restoring the default removes the row."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from ivr.prompt_store import PromptRefused, convert_prompt, file_sha256
from ivr.prompts import NAMES, PROMPT_DIR


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
    import asyncio

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
