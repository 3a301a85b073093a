"""A district's own prompt recordings (ivr/prompt_overrides.py): stored, refused, and played by
every node within moments of the change (LISTEN), back to the shipped prompt when restored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from pydub.generators import Sine

from ivr.prompt_overrides import LivePrompts, overrides, prompt_audio, restore_default, set_override
from ivr.prompt_store import PromptRefused
from ivr.prompts import PROMPT_DIR, _shipped, prompt, use_overrides


def tone(path: Path, ms: int) -> Path:
    Sine(440).to_audio_segment(duration=ms).set_frame_rate(22050).export(path, format="mp3")
    return path


async def wait_for(check, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within 4 s: {what}")


async def test_overrides_are_played_and_restored(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> None:
    live = LivePrompts(pool, database_url)
    await live.start()
    try:
        assert prompt("menu") is _shipped("menu")
        async with pool.acquire() as conn:
            await set_override(conn, "menu", tone(tmp_path / "menu.mp3", 700), source_name="menu.mp3",
                               actor="staff:ADM1")
            assert (await overrides(conn))["menu"].set_by == "staff:ADM1"
            assert (await prompt_audio(conn, "menu"))[:4] == b"RIFF"
        await wait_for(lambda: prompt("menu") is not _shipped("menu"), "the new menu prompt")
        assert abs(prompt("menu").seconds - 0.7) < 0.05
        async with pool.acquire() as conn:
            assert await restore_default(conn, "menu")
            assert not await restore_default(conn, "menu")
            assert await prompt_audio(conn, "menu") == (PROMPT_DIR / "menu.wav").read_bytes()
        await wait_for(lambda: prompt("menu") is _shipped("menu"), "the shipped menu prompt again")
    finally:
        await live.stop()
        use_overrides({})


async def test_what_is_not_audio_is_refused(pool: asyncpg.Pool, tmp_path: Path) -> None:
    fake = tmp_path / "greeting.wav"
    fake.write_text("not audio\n" * 100)
    async with pool.acquire() as conn:
        with pytest.raises(PromptRefused, match="cannot be decoded as audio"):
            await set_override(conn, "greeting", fake, source_name="greeting.wav", actor="staff:ADM1")
        with pytest.raises(KeyError):
            await set_override(conn, "../../etc/passwd", tone(tmp_path / "t.mp3", 200), source_name="t",
                               actor="staff:ADM1")
        assert await overrides(conn) == {}
