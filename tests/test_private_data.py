"""Residents' data stays the service's own: file modes whatever the umask, and no recording can
become a prompt played to every caller (issue 9 §5)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import asyncpg
import pytest

from ivr.prompts import PROMPT_DIR
from tests.conftest import ROOT, run_cli
from tests.district import District, build_district


def modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and everything under it (sockets aside), by relative path."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISSOCK(st.st_mode):
                continue
            found[str(p.relative_to(root))] = stat.S_IMODE(st.st_mode)
    return found


def test_everything_the_service_writes_is_private_whatever_the_umask(tmp_path: Path) -> None:
    # A child with umask 0 writes what the service writes: the key, a recording, a voicemail
    # (written and cut from a recording), a prompt, and the private Redis' directory.
    data = tmp_path / "data"
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        os.umask(0)
        from ivr.prompt_store import store_prompt
        from recordings.recorder import StereoRecorder, cut_voicemail, write_voicemail
        from store import embedded
        from store.pii import load_or_create_key

        data = Path({str(data)!r})
        load_or_create_key("", data)
        day = data / "recordings" / "2026" / "11" / "24"
        rec = StereoRecorder(day / "call-1.wav")
        rec.write(b"\\x20" * 8000, b"\\x30" * 8000, "PCMU")
        done = rec.finalize()
        write_voicemail(day / "call-2.voicemail.wav", b"\\x10" * 8000, "PCMU")
        cut_voicemail(done.path, 0.0, day / "call-1.voicemail.wav", min_seconds=0.1)
        store_prompt({str(PROMPT_DIR / "beep.wav")!r}, data_dir=data, private_roots=[data / "recordings"])
        embedded.ensure_redis(data)
        embedded.stop_redis(data)
    """)
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)
    found = modes(data)
    assert {"pii.key", "recordings/2026/11/24/call-1.wav", "recordings/2026/11/24/call-2.voicemail.wav",
            "recordings/2026/11/24/call-1.voicemail.wav", "prompts", "redis"} <= set(found)
    assert any(name.startswith("prompts/") and name.endswith(".wav") for name in found)
    loose = {name: oct(mode) for name, mode in found.items()
             if mode != (0o700 if (data / name).is_dir() else 0o600)}
    assert loose == {}


def test_an_existing_key_and_recording_are_tightened(tmp_path: Path) -> None:
    """A key copied in by hand, or a recording from before modes were enforced, is made 0600."""
    from recordings.recorder import StereoRecorder, repair
    from store.pii import load_or_create_key

    data = tmp_path / "data"
    data.mkdir()
    (data / "pii.key").write_text("a2V5\n")
    os.chmod(data / "pii.key", 0o644)
    assert load_or_create_key("", data) == "a2V5"
    rec = StereoRecorder(tmp_path / "old.wav")
    rec.write(b"\xff" * 160, b"\xff" * 160, "PCMU")
    rec.finalize()
    os.chmod(tmp_path / "old.wav", 0o644)
    repair(tmp_path / "old.wav")
    assert stat.S_IMODE((data / "pii.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "old.wav").stat().st_mode) == 0o600


# --- the prompt store --------------------------------------------------------------------------

@pytest.fixture
async def district(pool: asyncpg.Pool, vault) -> District:
    from datetime import date

    return await build_district(pool, vault, week_of=date(2026, 11, 22))


def stored_greeting(env: dict[str, str], number: str) -> str:
    listed = run_cli(env, "lines", "list").stdout
    line = next(ln for ln in listed.splitlines() if ln.startswith(f"{number}:"))
    return line.split(", greeting ", 1)[1].strip()


def check_stored_prompt(stored: Path, store: Path, source: Path) -> None:
    assert stored.parent == store.resolve()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and stat.S_IMODE(store.stat().st_mode) == 0o700
    with wave.open(str(stored)) as w:  # what calls play: 8 kHz mono 16-bit
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getnframes() > 8000
    source.unlink()  # the operator's file may go: the line keeps its greeting
    assert stored.exists()


def resident_data_sources(consultation: Path, data: Path, elsewhere: Path) -> dict[str, str]:
    """Files that must not become a prompt, and the reason each refusal gives."""
    elsewhere.mkdir()
    (elsewhere / "link.wav").symlink_to(consultation)
    shutil.copy(consultation, elsewhere / "copy.wav")
    os.link(consultation, elsewhere / "hardlink.wav")
    (elsewhere / "text.wav").write_text("this is not audio")
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROMPT_DIR / "desk.wav", data / "in-data-dir.wav")
    return {
        str(consultation): "holds residents' data",
        str(elsewhere / "link.wav"): "holds residents' data",  # a symlink is followed
        str(elsewhere / "copy.wav"): "is a call recording or voicemail",
        str(elsewhere / "hardlink.wav"): "is a call recording or voicemail",
        str(data / "in-data-dir.wav"): "holds residents' data",
        str(elsewhere / "text.wav"): "cannot be decoded as audio",
        str(elsewhere / "missing.wav"): "no such file",
        str(elsewhere): "not a regular file",
    }


def prompt_store_is_empty(data: Path) -> bool:
    return not (data / "prompts").exists() or not any((data / "prompts").iterdir())


async def test_a_greeting_is_decoded_and_copied_into_the_prompt_store(
        district: District, cli_env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "mine.wav"
    shutil.copy(PROMPT_DIR / "desk.wav", source)
    added = run_cli(cli_env, "lines", "add", "8005", "--greeting", str(source))
    assert added.returncode == 0, added.stderr
    stored = Path(stored_greeting(cli_env, "8005"))
    check_stored_prompt(stored, Path(cli_env["HOTLINE_DATA_DIR"]) / "prompts", source)
    # the same audio again is the same stored file
    again = run_cli(cli_env, "lines", "add", "8006", "--greeting", str(PROMPT_DIR / "desk.wav"))
    assert again.returncode == 0, again.stderr
    assert stored_greeting(cli_env, "8006") == str(stored)


async def test_no_recording_or_resident_data_can_become_a_greeting(
        district: District, cli_env: dict[str, str], pool: asyncpg.Pool, tmp_path: Path) -> None:
    from recordings.recorder import StereoRecorder

    data = Path(cli_env["HOTLINE_DATA_DIR"])
    recordings = tmp_path / "recs"
    env = dict(cli_env, HOTLINE_RECORDINGS_DIR=str(recordings))
    rec = StereoRecorder(recordings / "2026" / "11" / "24" / "consultation.wav")
    rec.write(b"\x20" * 16000, b"\x30" * 16000, "PCMU")
    consultation = rec.finalize()
    await pool.execute(
        "INSERT INTO call_records (call_id, offered_at, recording_path, recording_sha256)"
        " VALUES ('c-1', now(), $1, $2)", str(consultation.path), consultation.sha256)

    cases = resident_data_sources(consultation.path, data, tmp_path / "innocent")
    for i, (source, message) in enumerate(cases.items()):
        result = run_cli(env, "lines", "add", f"81{i:02d}", "--greeting", source)
        assert result.returncode == 2, (source, result.stdout)
        assert message in result.stderr and "Traceback" not in result.stderr, (source, result.stderr)
    assert await pool.fetchval("SELECT count(*) FROM hotline_lines") == 0
    assert prompt_store_is_empty(data)


async def test_the_audit_log_names_the_os_user_and_keeps_a_claim_beside_it(
        district: District, cli_env: dict[str, str], pool: asyncpg.Pool) -> None:
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    claimed = run_cli(dict(cli_env, HOTLINE_ACTOR="dr.wang"), "residents", "show", "13800000001",
                      "--json", "--reason", "callback")
    assert claimed.returncode == 0, claimed.stderr
    plain = run_cli({k: v for k, v in cli_env.items() if k != "HOTLINE_ACTOR"},
                    "residents", "list", "--json")
    assert plain.returncode == 0, plain.stderr
    rows = await pool.fetch("SELECT actor, claimed_actor, action FROM audit_log ORDER BY id")
    assert [tuple(r) for r in rows] == [(f"cli:{me}", "dr.wang", "resident.read"),
                                        (f"cli:{me}", None, "resident.list")]
    # a claim can neither replace nor forge the known actor
    forged = run_cli(dict(cli_env, HOTLINE_ACTOR=f"cli:{me}x"), "residents", "list", "--json")
    assert forged.returncode == 0
    last = await pool.fetchrow("SELECT actor, claimed_actor FROM audit_log ORDER BY id DESC LIMIT 1")
    assert tuple(last) == (f"cli:{me}", f"cli:{me}x")
    assert json.loads(plain.stdout)  # the listing itself still works
