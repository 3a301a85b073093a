"""In-band DTMF (telephony.dtmf_inband) on generated tones: every key, in noise, through G.711,
at the edges of duration and twist — and no false key from speech-like sound, a 440 Hz tone or
the hotline's own prompts (talk-off)."""

from __future__ import annotations

import audioop
import math
from array import array
from pathlib import Path

import pytest

from telephony.dtmf_inband import COLS, KEYS, ROWS, Detector
from telephony.prompts import Prompt

PROMPTS = Path(__file__).resolve().parent.parent / "ivr" / "prompts"
RATE = 8000
# -10 dBm0 per tone, a typical sending level
LEVEL = 22700 * 10 ** (-10 / 20)


def tone(freqs: tuple[float, ...], ms: float, amplitudes: tuple[float, ...] | None = None,
         phase: int = 0) -> array:
    n = round(RATE * ms / 1000)
    amps = amplitudes or (LEVEL,) * len(freqs)
    return array("h", (round(sum(a * math.sin(2 * math.pi * f * (i + phase) / RATE)
                                 for f, a in zip(freqs, amps, strict=True)))
                       for i in range(n)))


def silence(ms: float) -> array:
    return array("h", bytes(2 * round(RATE * ms / 1000)))


def key_tone(key: str, ms: float = 80, **kw) -> array:
    for r, row in enumerate(KEYS):
        if key in row:
            return tone((ROWS[r], COLS[row.index(key)]), ms, **kw)
    raise ValueError(key)


def noise(n: int, amplitude: float, seed: int = 12345) -> array:
    state, out = seed, array("h")
    for _ in range(n):
        state = (1103515245 * state + 12345) % 2**31
        out.append(round(((state >> 8) % 65536 / 65535 - 0.5) * 2 * amplitude))
    return out


def mix(a: array, b: array) -> array:
    return array("h", (max(-32768, min(32767, x + y)) for x, y in zip(a, b, strict=True)))


def detect(samples: array, chunk: int = 160) -> list[str]:
    """Fed in 20 ms frames, as RTP brings them."""
    detector = Detector()
    raw = samples.tobytes()
    found: list[str] = []
    for i in range(0, len(raw), chunk * 2):
        found += detector.feed(raw[i:i + chunk * 2])
    return found


def test_697_and_1209_hz_is_1() -> None:
    assert detect(silence(50) + key_tone("1") + silence(50)) == ["1"]


def test_all_sixteen_keys_in_a_row() -> None:
    keys = "123A456B789C*0#D"
    audio = array("h")
    for key in keys:
        audio += key_tone(key, 60) + silence(50)
    assert "".join(detect(audio)) == keys


def test_through_mu_law_and_a_law_as_rtp_payloads() -> None:
    audio = (silence(40) + key_tone("5") + silence(60) + key_tone("#") + silence(40)).tobytes()
    for codec, encode in (("PCMU", audioop.lin2ulaw), ("PCMA", audioop.lin2alaw)):
        payload = encode(audio, 2)
        detector, found = Detector(), []
        for i in range(0, len(payload), 160):
            found += detector.feed_payload(payload[i:i + 160], codec)
        assert found == ["5", "#"], codec


def test_on_digit_is_called_once_per_key() -> None:
    heard: list[str] = []
    detector = Detector(on_digit=heard.append)
    detector.feed((key_tone("9", 300) + silence(40)).tobytes())
    assert heard == ["9"]


def test_a_held_key_is_one_digit_and_a_repeated_key_needs_a_release_between() -> None:
    assert detect(key_tone("7", 1000)) == ["7"]
    # the same key twice with a 40 ms pause: two digits
    assert detect(key_tone("7") + silence(40) + key_tone("7")) == ["7", "7"]
    # a lost packet inside one long press (its 20 ms simply missing from what arrived, so the
    # tone jumps in phase): still one digit
    for phase in (37, 80, 101):
        assert detect(key_tone("7", 200) + key_tone("7", 200, phase=phase)) == ["7"], phase
    # one key straight into another: both
    assert detect(key_tone("1") + key_tone("2") + silence(40)) == ["1", "2"]


@pytest.mark.parametrize("phase", range(0, 102, 17))
def test_40_ms_is_always_enough_and_20_ms_never(phase: int) -> None:
    # wherever the tone falls across the detector's blocks
    assert detect(silence(phase / 8) + key_tone("8", 40) + silence(60)) == ["8"]
    assert detect(silence(phase / 8) + key_tone("8", 20) + silence(60)) == []


def test_in_noise() -> None:
    press = silence(100) + key_tone("3", 100) + silence(100)
    assert detect(mix(press, noise(len(press), LEVEL / 4))) == ["3"]  # ~14 dB SNR
    assert detect(noise(16000, LEVEL * 2)) == []  # loud noise alone is no key


def test_a_key_pressed_while_talking() -> None:
    # Linphone mixes its in-band tones into the microphone: the key arrives under the voice
    # (here a steady 440 Hz as loud as both tones together: 40 % of the power is the key)
    voice = tone((440,), 400, (LEVEL * 1.41,))
    press = silence(100) + key_tone("6", 100) + silence(200)
    assert detect(mix(voice, press)) == ["6"]


def test_weak_tones_and_twist_beyond_the_limits_are_no_key() -> None:
    low = 22700 * 10 ** (-36 / 20)
    assert detect(tone((697, 1209), 100, (low, low)) + silence(40)) == []
    # column 6 dB above the row: beyond the 4 dB allowed
    assert detect(tone((697, 1209), 100, (LEVEL / 2, LEVEL)) + silence(40)) == []
    # row 10 dB above the column: beyond the 8 dB allowed
    assert detect(tone((697, 1209), 100, (LEVEL, LEVEL / 3.2)) + silence(40)) == []
    # within the limits: row 6 dB above, column 3 dB above
    assert detect(tone((697, 1209), 100, (LEVEL, LEVEL / 2)) + silence(40)) == ["1"]
    assert detect(tone((697, 1209), 100, (LEVEL / 1.41, LEVEL)) + silence(40)) == ["1"]


def test_one_frequency_alone_or_a_third_one_is_no_key() -> None:
    assert detect(tone((697,), 200)) == []
    assert detect(tone((1209,), 200)) == []
    # two rows at once (a chord, not a key)
    assert detect(tone((697, 770, 1209), 200)) == []


def test_talk_off_a_440_hz_tone_and_ringback_and_busy_tones() -> None:
    assert detect(tone((440,), 2000)) == []
    assert detect(tone((350, 440), 2000)) == []  # North American dial tone
    assert detect(tone((480, 620), 2000)) == []  # busy
    assert detect(tone((450,), 2000)) == []  # Chinese ringback


def test_talk_off_speech_like_vowels() -> None:
    # voiced sounds: a fundamental with many harmonics (some land near DTMF frequencies),
    # gliding pitch as in speech
    for f0 in (100, 116, 139, 174, 232, 348):
        harmonics = tuple(f0 * k for k in range(1, 3400 // f0))
        amps = tuple(LEVEL / k for k in range(1, len(harmonics) + 1))
        assert detect(tone(harmonics, 500, amps)) == [], f0


@pytest.mark.parametrize("path", sorted(PROMPTS.glob("*.wav")), ids=lambda p: p.stem)
def test_talk_off_the_hotlines_own_prompts(path: Path) -> None:
    linear = audioop.ulaw2lin(Prompt.load(path).payload("PCMU"), 2)
    samples = array("h")
    samples.frombytes(linear)
    assert detect(samples) == []
