"""Keypad digits sent as tones in the audio (in-band DTMF), as many PSTN gateways pass them.

A streaming Goertzel detector over 8 kHz 16-bit linear samples, in windows of 102 samples
(12.75 ms; Asterisk's block size: fine enough to tell 697 Hz from 770 Hz) taken every 51 samples
(6.4 ms, so a tone's length is timed finely). A window holds a key when all of these hold:

- it is steady: neither half of the window has less than half the power of the other (a
  window the tone only partly fills is not a key window — that is what times the tone);
- the strongest row (697/770/852/941 Hz) and the strongest column (1209/1336/1477/1633 Hz)
  are each above MIN_TONE_POWER (about -30 dBm0 per tone);
- twist: the row is at most 8 dB above the column and the column at most 4 dB above the row
  (Asterisk's defaults: telephone lines lose more of the high group);
- every other row and column frequency is at least 8 dB below the best of its group;
- the two tones carry at least MIN_TONE_SHARE (30 %) of the window's power: noise and speech
  spread their power over many frequencies. Not more: Linphone mixes its tones into the
  microphone signal, so a key pressed while the caller talks arrives under their voice.

A key is reported once when five windows in a row hold it (every tone of 40 ms or more is
caught, as ITU-T Q.24 asks, none of 20 ms or less), and the detector must then see three
windows without it (release, ~19 ms) before it reports the same or another key: holding a key
down is one digit, a lost packet inside a press (a phase jump) is not a release, and a tone
that flickers in noise is not two keys.

Costs little: a window quieter than MIN_TONE_POWER (silence, most of a call) is dismissed with
audioop.rms (C) before any Goertzel runs, and the eight Goertzel filters share one pass.
"""

from __future__ import annotations

import audioop  # in the standard library up to 3.12; pyVoIP relies on it too
import math
from collections.abc import Callable

RATE = 8000
BLOCK = 102
HOP = BLOCK // 2
ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")
# Powers are mean squares on the 16-bit scale: a sine of amplitude A has power A²/2.
# -30 dBm0: a μ-law sine of 0 dBm0 has amplitude ~22700 (μ-law peaks at +3.17 dBm0).
MIN_TONE_POWER = (22700 * 10 ** (-30 / 20)) ** 2 / 2
ROW_OVER_COL = 10 ** (8 / 10)  # 8 dB
COL_OVER_ROW = 10 ** (4 / 10)  # 4 dB
OTHERS_BELOW = 10 ** (8 / 10)  # 8 dB
MIN_TONE_SHARE = 0.3
MIN_HALF_RATIO = 0.5
HITS_TO_BEGIN = 5
MISSES_TO_END = 3

_COEFFS = tuple(2 * math.cos(2 * math.pi * f / RATE) for f in ROWS + COLS)
_DECODE = {"PCMU": audioop.ulaw2lin, "PCMA": audioop.alaw2lin}


def _powers(block: list[int]) -> list[float]:
    """Power at each row and column frequency, scaled like a mean square (a sine of amplitude A
    at that frequency gives about A²/2)."""
    c0, c1, c2, c3, c4, c5, c6, c7 = _COEFFS
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = 0.0
    for x in block:  # eight Goertzel filters in one pass: the loop overhead is the cost
        a0, b0 = x + c0 * a0 - b0, a0
        a1, b1 = x + c1 * a1 - b1, a1
        a2, b2 = x + c2 * a2 - b2, a2
        a3, b3 = x + c3 * a3 - b3, a3
        a4, b4 = x + c4 * a4 - b4, a4
        a5, b5 = x + c5 * a5 - b5, a5
        a6, b6 = x + c6 * a6 - b6, a6
        a7, b7 = x + c7 * a7 - b7, a7
    scale = 2.0 / (len(block) ** 2)
    return [(s1 * s1 + s2 * s2 - c * s1 * s2) * scale
            for s1, s2, c in ((a0, b0, c0), (a1, b1, c1), (a2, b2, c2), (a3, b3, c3),
                              (a4, b4, c4), (a5, b5, c5), (a6, b6, c6), (a7, b7, c7))]


def block_key(block: list[int]) -> str | None:
    """The key one block of BLOCK samples holds, or None (see the module docstring)."""
    n = len(block)
    mean = sum(block) / n
    total = sum(x * x for x in block) / n - mean * mean
    if total < MIN_TONE_POWER:
        return None
    powers = _powers(block)
    rows, cols = powers[:4], powers[4:]
    r = max(range(4), key=rows.__getitem__)
    c = max(range(4), key=cols.__getitem__)
    row, col = rows[r], cols[c]
    if row < MIN_TONE_POWER or col < MIN_TONE_POWER:
        return None
    if row > col * ROW_OVER_COL or col > row * COL_OVER_ROW:
        return None
    if any(p * OTHERS_BELOW > row for i, p in enumerate(rows) if i != r):
        return None
    if any(p * OTHERS_BELOW > col for i, p in enumerate(cols) if i != c):
        return None
    if row + col < MIN_TONE_SHARE * total:
        return None
    return KEYS[r][c]


def window_key(window: bytes) -> str | None:
    """The key one window (BLOCK 16-bit samples) holds, or None. The cheap checks — loud
    enough, steady — run in C (audioop) before any Python arithmetic."""
    first, second = audioop.rms(window[:HOP * 2], 2) ** 2, audioop.rms(window[HOP * 2:], 2) ** 2
    if first + second < 2 * MIN_TONE_POWER:
        return None
    if min(first, second) < MIN_HALF_RATIO * max(first, second):
        return None
    return block_key(memoryview(window).cast("h").tolist())


class Detector:
    """Feed it a call's received audio as it comes; it reports each key once (returned by feed,
    and passed to `on_digit` if given). Not thread-safe: feed from one thread (the RTP receive
    loop). State carries across feeds, so 20 ms frames may split blocks anywhere."""

    def __init__(self, on_digit: Callable[[str], None] | None = None) -> None:
        self.on_digit = on_digit
        self._pending = b""
        self._held: str | None = None
        self._candidate: str | None = None
        self._hits = 0
        self._misses = 0

    def feed_payload(self, payload: bytes, codec: str) -> list[str]:
        """G.711 bytes as received (codec "PCMU" or "PCMA")."""
        return self.feed(_DECODE[codec](payload, 2))

    def feed(self, linear: bytes) -> list[str]:
        """16-bit little-endian linear samples at 8 kHz; the keys that began in them."""
        data = self._pending + linear
        found: list[str] = []
        pos = 0
        while len(data) - pos >= BLOCK * 2:
            digit = self._step(window_key(data[pos:pos + BLOCK * 2]))
            pos += HOP * 2
            if digit is not None:
                found.append(digit)
                if self.on_digit is not None:
                    self.on_digit(digit)
        self._pending = data[pos:]
        return found

    def _step(self, key: str | None) -> str | None:
        if self._held is not None:
            if key == self._held:
                self._misses = 0
                return None
            self._misses += 1
            if self._misses < MISSES_TO_END:
                return None
            self._held, self._misses = None, 0
            self._candidate, self._hits = None, 0  # released: this block may begin the next key
        if key is not None and key == self._candidate:
            self._hits += 1
        else:
            self._candidate, self._hits = key, (1 if key is not None else 0)
        if self._candidate is not None and self._hits >= HITS_TO_BEGIN:
            self._held, self._candidate, self._hits = self._candidate, None, 0
            return self._held
        return None
