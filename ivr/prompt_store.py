"""The service's own prompt store: audio an operator gives (a center's greeting) as the service keeps it.

A prompt is never played from where the operator's file lies. It is decoded as audio (pydub; a
file that is not audio is refused), converted to what calls play (8 kHz mono 16-bit WAV) and
written into DATA_DIR/prompts/ under a name made of its content hash (0600, directory 0700).
So what is stored is audio and only audio, later edits or removals of the original change
nothing, and the stored path is inside a directory the service alone owns.

Nothing that holds residents' data may become a prompt, since a greeting is played to every
caller: files under the recordings directory or the data directory (symlinks resolved, so a
link elsewhere does not hide one), and any file whose content is a recording or voicemail the
call records know by SHA-256 (a copy or hard link of one taken out of the recordings tree).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from store.private import create_private, private_dir

# A greeting is seconds long; a 50 MB source is already an hour of CD audio. Checked before
# decoding, so an operator's mistake does not cost the memory of decoding a film.
MAX_SOURCE_BYTES = 50 * 1024 * 1024
MAX_SECONDS = 300.0
RATE = 8000


class PromptRefused(Exception):
    """A file that cannot become a prompt; the message says why."""


def prompt_store_dir(data_dir: Path) -> Path:
    return data_dir / "prompts"


def file_sha256(source: str | Path) -> str:
    """The SHA-256 of a file's bytes (as call records keep them), or PromptRefused."""
    digest = hashlib.sha256()
    try:
        with Path(source).expanduser().open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise PromptRefused(f"{source}: no such file") from None
    except IsADirectoryError:
        raise PromptRefused(f"{source}: not a regular file") from None
    except OSError as exc:
        raise PromptRefused(f"{source}: cannot be read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def convert_prompt(path: Path, *, shown: str = "") -> bytes:
    """The audio of a file as calls play it (8 kHz mono 16-bit WAV), or PromptRefused.

    Any format pydub (ffmpeg) reads; anything else, silence or more than MAX_SECONDS refused.
    `shown`: how the file is named in the message (the operator's name for it)."""
    from pydub import AudioSegment

    shown = shown or str(path)
    try:
        audio = AudioSegment.from_file(path)
    except Exception as exc:  # pydub/ffmpeg fail in many ways on what is not audio
        raise PromptRefused(f"{shown}: cannot be decoded as audio ({type(exc).__name__})") from None
    audio = audio.set_channels(1).set_frame_rate(RATE).set_sample_width(2)
    seconds = len(audio.raw_data) / (2 * RATE)
    if seconds <= 0:
        raise PromptRefused(f"{shown}: holds no audio")
    if seconds > MAX_SECONDS:
        raise PromptRefused(f"{shown}: {seconds:.0f} s is too long for a prompt (at most {MAX_SECONDS:g} s)")
    wav = io.BytesIO()
    audio.export(wav, format="wav")
    return wav.getvalue()


def store_prompt(source: str | Path, *, data_dir: Path, private_roots: Iterable[Path],
                 is_resident_audio: Callable[[str], bool] = lambda _sha: False) -> Path:
    """Decode `source`, write it into the prompt store, return the stored file's path.

    `private_roots`: directories whose files are residents' data (the recordings directory, the
    data directory). `is_resident_audio(sha256)`: whether a recording or voicemail has this hash.
    The same audio stored twice is one file.
    """
    store = prompt_store_dir(data_dir).resolve()
    given = Path(source).expanduser()
    try:
        path = given.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):  # RuntimeError: a symlink loop
        raise PromptRefused(f"{source}: no such file") from None
    if not path.is_file():
        raise PromptRefused(f"{source}: not a regular file")
    if not _inside(path, store):  # a prompt already in the store may be used again
        for root in private_roots:
            root = Path(root).expanduser().resolve()
            if _inside(path, root):
                raise PromptRefused(
                    f"{source}: lies in {root}, which holds residents' data (recordings, "
                    "voicemails, keys); a prompt is played to every caller, so it cannot come from there")
    size = path.stat().st_size
    if size > MAX_SOURCE_BYTES:
        raise PromptRefused(f"{source}: {size // (1024 * 1024)} MB is too large for a prompt "
                            f"(at most {MAX_SOURCE_BYTES // (1024 * 1024)} MB)")
    if is_resident_audio(file_sha256(path)):
        raise PromptRefused(f"{source}: this is a call recording or voicemail (its SHA-256 is in "
                            "the call records); a resident's call cannot become a prompt")
    data = convert_prompt(path, shown=str(source))
    private_dir(store)
    target = store / f"{hashlib.sha256(data).hexdigest()[:32]}.wav"
    if target.exists():
        return target
    tmp = store / f".{target.name}.{os.getpid()}.tmp"
    with create_private(tmp) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)  # a reader never sees half a prompt
    return target
