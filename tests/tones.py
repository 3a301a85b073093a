"""Audio analysis for tests: did a phone hear the tone the other end sent?

Pure standard library (no numpy in the venv): WAV files are read with a small RIFF parser, G.711
is decoded with audioop, and tones are measured with the Goertzel algorithm over 100 ms blocks.

Why blocks: audio that crossed RTP has gaps, jitter-buffer repeats and resampler phase jumps.
One coherent Goertzel over seconds of such audio loses power at every phase jump; summing the
power of short blocks (each Hann-windowed) does not care. Why ratios: a loud signal has some
power at every frequency, so "is there power at 1000 Hz" means nothing on its own; what tells
440 Hz from 1000 Hz is the share of all the signal's energy that sits at the frequency, and
that it beats every other candidate frequency.
"""

from __future__ import annotations

import cmath
import math
import struct
import warnings
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():  # deprecated in 3.11, gone in 3.13 — as for pyVoIP itself
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Samples = Sequence[int] | Sequence[float]

# Frequencies a test phone might plausibly carry: dial/ring/busy tones, DTMF rows and columns,
# the usual test tones. has_tone() requires the asked frequency to beat each of these.
CANDIDATE_FREQS: tuple[float, ...] = (
    350, 400, 425, 440, 480, 550, 620, 697, 770, 852, 941, 1000, 1209, 1336, 1477, 1633,
    2000, 2600, 3000,
)
# RMS below this (16-bit scale, about -50 dBFS) is silence: no tone is "heard" in it.
SILENCE_RMS = 100.0
_WAVE_FORMAT_PCM, _WAVE_FORMAT_ALAW, _WAVE_FORMAT_MULAW = 1, 6, 7
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class WavAudio:
    rate: int
    channels: list[array]  # one array('h') of 16-bit samples per channel

    @property
    def mono(self) -> array:
        """Channel 0: a softphone's recording is mono; for stereo pick channels[n] yourself."""
        return self.channels[0]

    @property
    def seconds(self) -> float:
        return len(self.channels[0]) / self.rate if self.rate else 0.0


def read_wav(path: str | Path) -> WavAudio:
    """A WAV file (PCM 16-bit, μ-law or A-law; mono or stereo; any rate) as per-channel samples.

    A data chunk whose size was never filled in (the writer — baresip's sndfile, a killed
    recorder — has not closed the file yet: size 0 or past the end) is read to the end of the
    file, so a recording can be checked while the call is still up."""
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            tag, channels, rate = struct.unpack_from("<HHI", data, body)
            bits = struct.unpack_from("<H", data, body + 14)[0]
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                tag = struct.unpack_from("<H", data, body + 24)[0]  # sub-format GUID's first word
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError(f"{path}: data chunk before fmt chunk")
            end = body + size if 0 < size <= len(data) - body else len(data)
            return _decode(fmt, data[body:end], path)
        pos = body + size + (size & 1)  # chunks are word-aligned
    raise ValueError(f"{path}: no data chunk")


def _decode(fmt: tuple[int, int, int, int], raw: bytes, path: str | Path) -> WavAudio:
    tag, channels, rate, bits = fmt
    if channels < 1:
        raise ValueError(f"{path}: {channels} channels")
    if tag == _WAVE_FORMAT_PCM and bits == 16:
        pcm = raw[: len(raw) - len(raw) % (2 * channels)]
    elif tag == _WAVE_FORMAT_MULAW and bits == 8:
        pcm = ulaw_to_linear(raw[: len(raw) - len(raw) % channels]).tobytes()
    elif tag == _WAVE_FORMAT_ALAW and bits == 8:
        pcm = alaw_to_linear(raw[: len(raw) - len(raw) % channels]).tobytes()
    else:
        raise ValueError(f"{path}: unsupported WAV format tag {tag} with {bits} bits")
    interleaved = array("h")
    interleaved.frombytes(pcm)  # WAV is little-endian, like every machine we run on
    return WavAudio(rate, [interleaved[c::channels] for c in range(channels)])


def ulaw_to_linear(payload: bytes) -> array:
    """G.711 μ-law bytes (PCMU RTP payloads) to 16-bit samples."""
    out = array("h")
    out.frombytes(audioop.ulaw2lin(payload, 2))
    return out


def alaw_to_linear(payload: bytes) -> array:
    """G.711 A-law bytes (PCMA RTP payloads) to 16-bit samples."""
    out = array("h")
    out.frombytes(audioop.alaw2lin(payload, 2))
    return out


def sine(freq: float, rate: int = 8000, seconds: float = 1.0, amplitude: float = 0.5) -> array:
    """A sine tone as 16-bit samples (amplitude as a fraction of full scale)."""
    scale = 32767 * amplitude
    step = 2 * math.pi * freq / rate
    return array("h", (round(scale * math.sin(step * i)) for i in range(round(rate * seconds))))


def ulaw_tone(freq: float, seconds: float = 1.0, amplitude: float = 0.5) -> bytes:
    """An 8 kHz μ-law tone: the payload bytes a PCMU phone would send."""
    return audioop.lin2ulaw(sine(freq, 8000, seconds, amplitude).tobytes(), 2)


def rms(samples: Samples) -> float:
    """Root mean square around the mean (a DC offset is not sound)."""
    n = len(samples)
    if n == 0:
        return 0.0
    mean = sum(samples) / n
    return math.sqrt(max(sum(x * x for x in samples) / n - mean * mean, 0.0))


def _blocks(samples: Samples, rate: int) -> Iterable[Samples]:
    size = max(rate // 10, 16)  # 100 ms: 10 Hz resolution, short enough to sit between glitches
    if len(samples) < size:
        if len(samples) >= 16:
            yield samples
        return
    for start in range(0, len(samples) - size + 1, size):
        yield samples[start:start + size]


def _hann(n: int) -> list[float]:
    return [0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1)) for i in range(n)]


def _goertzel(block: Samples, window: Sequence[float], rate: int, freq: float) -> float:
    """Power of one block at freq, scaled so that a sine of amplitude A gives A²/2 (its mean
    square) whatever the window or block length — comparable with the block's mean square."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x, w in zip(block, window, strict=True):
        s1, s2 = x * w + coeff * s1 - s2, s1
    magnitude2 = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * magnitude2 / (sum(window) ** 2)


def tone_power(samples: Samples, rate: int, freq: float) -> float:
    """Mean power of the signal at freq (block-wise Goertzel), in the units of mean square:
    a sine of amplitude A at freq gives about A²/2, i.e. the same as its total power."""
    return _tone_powers(samples, rate, [freq])[0]


def _tone_powers(samples: Samples, rate: int, freqs: Sequence[float]) -> list[float]:
    totals = [0.0] * len(freqs)
    count = 0
    window: list[float] = []
    for block in _blocks(samples, rate):
        if len(window) != len(block):
            window = _hann(len(block))
        mean = sum(block) / len(block)
        centred = [x - mean for x in block]
        for i, freq in enumerate(freqs):
            totals[i] += _goertzel(centred, window, rate, freq)
        count += 1
    return [t / count if count else 0.0 for t in totals]


def tone_ratio(samples: Samples, rate: int, freq: float) -> float:
    """Share (0..~1) of the signal's power that sits at freq; 0 for silence."""
    level = rms(samples)
    if level < SILENCE_RMS:
        return 0.0
    return tone_power(samples, rate, freq) / (level * level)


def has_tone(samples: Samples, rate: int, freq: float, *, min_ratio: float = 0.5,
             others: Iterable[float] | None = None, dominance: float = 10.0) -> bool:
    """Whether freq is what this audio carries: not silence, at least min_ratio of all the power
    at freq, and freq at least `dominance` times stronger than every other candidate
    frequency (CANDIDATE_FREQS unless `others` is given; those within 50 Hz of freq skipped)."""
    level = rms(samples)
    if level < SILENCE_RMS:
        return False
    rivals = [f for f in (CANDIDATE_FREQS if others is None else others)
              if abs(f - freq) > 50 and 0 < f < rate / 2]
    powers = _tone_powers(samples, rate, [freq, *rivals])
    if powers[0] < min_ratio * level * level:
        return False
    return all(powers[0] >= dominance * p for p in powers[1:])


def dominant_frequency(samples: Samples, rate: int) -> float:
    """The strongest frequency (Hz, about 1 Hz precise) of the audio: Hann-windowed FFT power
    averaged over up to 8 blocks of 2048 samples spread over the signal (Welch), then refined
    by a parabola through the peak bin. 0.0 for silence or audio too short to tell."""
    size = 2048
    if rms(samples) < SILENCE_RMS or len(samples) < 64:
        return 0.0
    if len(samples) < size:
        size = 1 << (len(samples).bit_length() - 1)
    starts = range(0, len(samples) - size + 1, size)
    picked = list(starts)[:: max(1, len(starts) // 8)][:8]
    window = _hann(size)
    spectrum = [0.0] * (size // 2)
    for start in picked:
        block = samples[start:start + size]
        mean = sum(block) / size
        bins = _fft([complex((x - mean) * w) for x, w in zip(block, window, strict=True)])
        for k in range(1, size // 2):  # bin 0 is DC
            spectrum[k] += abs(bins[k]) ** 2
    peak = max(range(1, size // 2), key=spectrum.__getitem__)
    offset = 0.0
    if 1 < peak < size // 2 - 1:
        left, mid, right = (math.log(spectrum[peak + d] + 1e-12) for d in (-1, 0, 1))
        denominator = left - 2 * mid + right
        if denominator:
            offset = 0.5 * (left - right) / denominator
    return (peak + offset) * rate / size


def _fft(values: list[complex]) -> list[complex]:
    """Iterative radix-2 FFT (len(values) a power of two)."""
    n = len(values)
    out = list(values)
    j = 0
    for i in range(1, n):  # bit-reversal permutation
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            out[i], out[j] = out[j], out[i]
    length = 2
    while length <= n:
        step = cmath.exp(-2j * math.pi / length)
        for start in range(0, n, length):
            w = 1 + 0j
            for k in range(length // 2):
                a, b = out[start + k], out[start + k + length // 2] * w
                out[start + k], out[start + k + length // 2] = a + b, a - b
                w *= step
        length <<= 1
    return out


def describe(samples: Samples, rate: int, freqs: Iterable[float] = (440, 1000)) -> str:
    """A one-line account of some audio for assertion messages."""
    level = rms(samples)
    shares = ", ".join(f"{f:g} Hz {tone_ratio(samples, rate, f):.2f}" for f in freqs)
    return (f"{len(samples) / rate:.2f} s at {rate} Hz, rms {level:.0f}, "
            f"dominant {dominant_frequency(samples, rate):.1f} Hz, power share: {shares}")
