"""Prompts: audio files converted once to the G.711 payload a call sends.

A prompt file in any format ffmpeg reads is loaded with pydub, resampled to 8 kHz mono 16-bit,
and encoded to μ-law and A-law once; playing it on a call then only queues bytes.
"""

from __future__ import annotations

import audioop  # in the standard library up to 3.12; pydub and pyVoIP rely on it too
import io
from dataclasses import dataclass
from pathlib import Path

from pydub import AudioSegment


@dataclass(frozen=True)
class Prompt:
    name: str
    seconds: float
    encoded: dict[str, bytes]  # codec name (PCMU, PCMA) -> payload bytes

    @classmethod
    def load(cls, path: Path) -> Prompt:
        # pydub leaves a file it opened itself unclosed (a ResourceWarning per prompt): hand it
        # an open file instead, with the format its name says (None: ffmpeg probes).
        path = Path(path)
        with path.open("rb") as file:
            audio = AudioSegment.from_file(file, format=path.suffix.lstrip(".").lower() or None)
        return cls._of(path.stem, audio)

    @classmethod
    def from_bytes(cls, name: str, data: bytes, *, format: str = "wav") -> Prompt:
        """A prompt kept as bytes (a district's own recording, in PostgreSQL)."""
        return cls._of(name, AudioSegment.from_file(io.BytesIO(data), format=format))

    @classmethod
    def _of(cls, name: str, audio: AudioSegment) -> Prompt:
        audio = audio.set_channels(1).set_frame_rate(8000).set_sample_width(2)
        linear = audio.raw_data
        return cls(
            name=name,
            seconds=len(linear) / (2 * 8000),  # exact; pydub's len() is whole milliseconds
            encoded={"PCMU": audioop.lin2ulaw(linear, 2), "PCMA": audioop.lin2alaw(linear, 2)},
        )

    def payload(self, codec: str) -> bytes:
        try:
            return self.encoded[codec]
        except KeyError:
            raise ValueError(f"prompt {self.name}: no encoding for codec {codec}") from None
