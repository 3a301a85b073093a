"""The committed default prompts: every one present, speech (not silence), in both codecs."""

from __future__ import annotations

import audioop

import pytest

from ivr.prompts import NAMES, prompt, texts


def test_every_prompt_has_its_text_and_audio() -> None:
    assert sorted(texts()) == sorted(NAMES)
    assert texts()["busy"] == "签约服务热线提示您坐席忙，请稍后。"  # the wording the issue fixes


TONES = ("beep", "hold", "ringback")  # not speech: the voicemail tone, hold chime, ringback


@pytest.mark.parametrize("name", [n for n in NAMES if n not in TONES])
def test_a_prompt_is_speech_in_both_codecs(name: str) -> None:
    p = prompt(name)
    assert 2.0 < p.seconds < 12.0
    for codec, decode in (("PCMU", audioop.ulaw2lin), ("PCMA", audioop.alaw2lin)):
        pcm = decode(p.payload(codec), 2)
        assert len(pcm) == round(p.seconds * 8000) * 2
        assert audioop.rms(pcm, 2) > 300  # speech, not silence
    assert prompt(name) is p  # loaded once


@pytest.mark.parametrize(("name", "seconds"), [("beep", 0.7), ("hold", 2.0), ("ringback", 5.0)])
def test_tones_are_short_and_audible(name: str, seconds: float) -> None:
    p = prompt(name)
    assert p.seconds == seconds
    assert audioop.rms(audioop.ulaw2lin(p.payload("PCMU"), 2), 2) > 300


def test_ringback_is_450_hz_one_second_on_four_off() -> None:
    from tests.tones import dominant_frequency, rms, ulaw_to_linear

    samples = ulaw_to_linear(prompt("ringback").payload("PCMU"))
    tone, pause = samples[:8000], samples[8000:]
    assert abs(dominant_frequency(tone, 8000) - 450) < 10
    assert rms(pause) < 5


def test_queue_position_prompts() -> None:
    from ivr.prompts import queue_position

    assert [queue_position(n) for n in (0, 1, 9, 10)] == ["queue_next", "queue_1", "queue_9", "queue_many"]
    assert texts()["queue_3"] == "您前面还有3位，请稍候。"


def test_an_unknown_prompt_is_named() -> None:
    with pytest.raises(KeyError, match="no prompt named 'hello'"):
        prompt("hello")


def test_loading_a_prompt_leaves_no_file_open() -> None:
    # pydub leaves a file it opens itself unclosed: one ResourceWarning per prompt on stderr
    import gc
    import warnings
    from pathlib import Path

    from telephony.prompts import Prompt

    wav = Path(__file__).resolve().parent.parent / "ivr" / "prompts" / "beep.wav"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert Prompt.load(wav).seconds == 0.7
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
