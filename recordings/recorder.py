"""Stereo call recordings that survive a crash: caller on the left, staff (or prompts) on the right.

The WAV file is written as the call goes: a header, then 16-bit frames appended every few hundred
milliseconds, with the header's sizes rewritten and the file fsynced at each flush. A process
killed mid-call leaves a file whose header is at most one flush behind; `repair` recomputes it
from the file's length (dropping a half-written sample frame), so nothing already on disk is
lost. `finalize` closes the file and returns its duration and SHA-256 for the call record.

A caller's message (voicemail) is written as a mono file of its own when it ends; if a crash
comes first, `cut_voicemail` takes it from the repaired recording's caller channel.
"""

from __future__ import annotations

import audioop  # in the standard library up to 3.12; pydub and pyVoIP rely on it too
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from store.private import FILE_MODE, create_private, private_dir

RATE = 8000
CHANNELS = 2
SAMPLE_BYTES = 2
BLOCK = CHANNELS * SAMPLE_BYTES  # one stereo sample frame
HEADER_BYTES = 44

_DECODE = {"PCMU": audioop.ulaw2lin, "PCMA": audioop.alaw2lin}


class RecordingError(Exception):
    """A recording file cannot be written or repaired; the message names the file."""


@dataclass(frozen=True)
class Recording:
    path: Path
    seconds: float
    sha256: str


def _header(data_bytes: int) -> bytes:
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, CHANNELS, RATE, RATE * BLOCK, BLOCK, SAMPLE_BYTES * 8)
        + b"data" + struct.pack("<I", data_bytes)
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class StereoRecorder:
    def __init__(self, path: Path):
        self.path = path
        try:
            private_dir(path.parent)  # a consultation: the service's user only (0700/0600)
            # x: never overwrite another call's recording
            self._file = create_private(path)
        except OSError as exc:
            raise RecordingError(f"cannot create recording {path}: {exc.strerror or exc}") from None
        self._file.write(_header(0))
        self._data_bytes = 0

    def write(self, left: bytes, right: bytes, codec: str) -> None:
        """Append the same span of time from both sides as G.711 bytes in `codec`; the shorter
        side is padded with silence (a side that sent nothing was silent)."""
        decode = _DECODE.get(codec)
        if decode is None:
            raise RecordingError(f"{self.path.name}: cannot record codec {codec}")
        left_pcm, right_pcm = decode(left, SAMPLE_BYTES), decode(right, SAMPLE_BYTES)
        length = max(len(left_pcm), len(right_pcm))
        left_pcm = left_pcm.ljust(length, b"\0")
        right_pcm = right_pcm.ljust(length, b"\0")
        frames = audioop.add(audioop.tostereo(left_pcm, SAMPLE_BYTES, 1, 0),
                             audioop.tostereo(right_pcm, SAMPLE_BYTES, 0, 1), SAMPLE_BYTES)
        self._file.write(frames)
        self._data_bytes += len(frames)

    def flush(self) -> None:
        """Make what was written so far durable, header included."""
        self._file.flush()
        end = self._file.tell()
        self._file.seek(0)
        self._file.write(_header(self._data_bytes))
        self._file.seek(end)
        self._file.flush()
        os.fsync(self._file.fileno())

    @property
    def frames(self) -> int:
        """Stereo sample frames written so far (one per 1/8000 s)."""
        return self._data_bytes // BLOCK

    @property
    def seconds(self) -> float:
        return self._data_bytes / (RATE * BLOCK)

    def finalize(self) -> Recording:
        self.flush()
        self._file.close()
        return Recording(self.path, self.seconds, _sha256(self.path))


# G.711 silence, to pad a side that sent nothing.
_SILENCE_BYTE = {"PCMU": b"\xff", "PCMA": b"\xd5"}
# The loudest sample those silence bytes decode to (A-law's is 8, μ-law's 0): a stretch no
# louder than this is padding, not a caller's voice or even their line noise.
DIGITAL_SILENCE = 8
# How far one side may run ahead of the other before the late side is taken as silent: more
# than RTP jitter, less than anyone would notice as an echo between the channels.
MAX_SKEW_BYTES = 2400  # 0.3 s of G.711


class AlignedStereo:
    """Feeds a StereoRecorder from two sides that deliver audio at their own pace.

    The staff side (what the service sent the caller) comes on the service's own 20 ms grid;
    the caller side comes as RTP arrives, with jitter. Writing each delivery as it came would
    pad the shorter side every time and stretch the recording; here each side is buffered and
    only the span both sides have is written. A side silent for longer than MAX_SKEW_BYTES
    (caller's phone muted with silence suppression, RTP lost) is padded so the other side
    is never held back for long.
    """

    def __init__(self, recorder: StereoRecorder, codec: str):
        if codec not in _SILENCE_BYTE:
            raise RecordingError(f"{recorder.path.name}: cannot record codec {codec}")
        self.recorder = recorder
        self.codec = codec
        self._left = bytearray()
        self._right = bytearray()

    def feed(self, left: bytes, right: bytes) -> None:
        self._left += left
        self._right += right
        skew = len(self._left) - len(self._right)
        if skew > MAX_SKEW_BYTES:
            self._right += _SILENCE_BYTE[self.codec] * (skew - MAX_SKEW_BYTES)
        elif -skew > MAX_SKEW_BYTES:
            self._left += _SILENCE_BYTE[self.codec] * (-skew - MAX_SKEW_BYTES)
        self._write(min(len(self._left), len(self._right)))

    @property
    def left_seconds(self) -> float:
        """Where the next audio fed on the left side will sit in the file, in seconds: what the
        recorder has written plus what waits here for the right side (one G.711 byte a sample).
        Padding only ever goes after what was fed, so the position holds whatever comes next."""
        return (self.recorder.frames + len(self._left)) / RATE

    def close(self) -> Recording:
        """Write what is left (the shorter side padded) and finalize the file."""
        self._write(max(len(self._left), len(self._right)))
        return self.recorder.finalize()

    def _write(self, length: int) -> None:
        if length:
            self.recorder.write(bytes(self._left[:length]), bytes(self._right[:length]), self.codec)
            del self._left[:length], self._right[:length]


def _mono_header(data_bytes: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * SAMPLE_BYTES, SAMPLE_BYTES, 16)
            + b"data" + struct.pack("<I", data_bytes))


def _write_voicemail_file(path: Path, pcm: bytes) -> Recording:
    try:
        private_dir(path.parent)
        with create_private(path) as f:  # x: a message is never overwritten; 0600
            f.write(_mono_header(len(pcm)) + pcm)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise RecordingError(f"cannot write voicemail {path}: {exc.strerror or exc}") from None
    return Recording(path, len(pcm) / (RATE * SAMPLE_BYTES), _sha256(path))


def write_voicemail(path: Path, payload: bytes, codec: str) -> Recording:
    """A caller's message as a mono 16-bit WAV next to the call recordings (written once, at
    the end of the message; a message cut by a crash is recovered by `cut_voicemail`)."""
    decode = _DECODE.get(codec)
    if decode is None:
        raise RecordingError(f"{path.name}: cannot record codec {codec}")
    return _write_voicemail_file(path, decode(payload, SAMPLE_BYTES))


def _voicemail_on_disk(path: Path) -> Recording | None:
    """The complete voicemail already at `path`, or None when there is none."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(HEADER_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordingError(f"cannot read voicemail {path}: {exc.strerror or exc}") from None
    if size < HEADER_BYTES or head != _mono_header(size - HEADER_BYTES):
        raise RecordingError(f"{path} exists and is not a complete voicemail")
    return Recording(path, (size - HEADER_BYTES) / (RATE * SAMPLE_BYTES), _sha256(path))


def cut_voicemail(recording: Path, offset_s: float, path: Path, *, min_seconds: float) -> Recording | None:
    """The caller's message from a stereo recording (finalized or repaired): its caller channel
    (left) from `offset_s` seconds to the end, written to `path` as `write_voicemail` writes a
    message (mono, 16-bit, 8 kHz), with its duration and SHA-256.

    None when less than `min_seconds` of the caller's side lies past the offset — nothing was
    said, or nothing of it reached the disk — or when all of it is the recorder's silence
    padding (the caller's phone sent no audio after the beep). An offset beyond the end is such a case, not an
    error: a writer killed just after the beep may not have written the beep out yet.

    A complete voicemail already at `path` (the call wrote its message, then died before the
    record was closed; or an earlier recovery did) is returned as it is: a message is never
    overwritten, and cutting again changes nothing. Something else at `path` is an error.
    """
    if not offset_s >= 0:  # NaN too
        raise RecordingError(f"{recording.name}: a voicemail cannot start at {offset_s} s")
    kept = _voicemail_on_disk(path)
    if kept is not None:
        return kept
    try:
        size = recording.stat().st_size
        with recording.open("rb") as f:
            head = f.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES or head[:4] != b"RIFF" or head[8:16] != b"WAVEfmt " \
                    or head[22:24] != struct.pack("<H", CHANNELS):
                raise RecordingError(f"{recording} is not a recording this service wrote")
            frames = (size - HEADER_BYTES) // BLOCK
            first = round(offset_s * RATE)
            if frames - first <= 0 or frames - first < min_seconds * RATE:
                return None
            f.seek(HEADER_BYTES + first * BLOCK)
            stereo = f.read((frames - first) * BLOCK)
    except OSError as exc:
        raise RecordingError(f"cannot read recording {recording}: {exc.strerror or exc}") from None
    message = audioop.tomono(stereo, SAMPLE_BYTES, 1, 0)
    if audioop.max(message, SAMPLE_BYTES) <= DIGITAL_SILENCE:
        return None  # only the recorder's padding: the caller sent no audio after the beep
    return _write_voicemail_file(path, message)


def repair(path: Path) -> Recording:
    """Fix the header of a recording whose writer died; return it finalized (idempotent)."""
    try:
        size = path.stat().st_size
        with path.open("r+b") as f:
            head = f.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES or head[:4] != b"RIFF" or head[8:16] != b"WAVEfmt ":
                raise RecordingError(f"{path} is not a recording this service wrote")
            data_bytes = (size - HEADER_BYTES) // BLOCK * BLOCK
            f.truncate(HEADER_BYTES + data_bytes)  # a half-written sample frame goes
            f.seek(0)
            f.write(_header(data_bytes))
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), FILE_MODE)  # one written before modes were enforced, too
    except OSError as exc:
        raise RecordingError(f"cannot repair recording {path}: {exc.strerror or exc}") from None
    return Recording(path, data_bytes / (RATE * BLOCK), _sha256(path))
