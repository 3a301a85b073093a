"""The committed default prompts: every one present, speech (not silence), in both codecs."""

from __future__ import annotations

import audioop

import pytest

from ivr.prompts import NAMES, prompt, texts


def test_every_prompt_has_its_text_and_audio() -> None:
    assert sorted(texts()) == sorted(NAMES)
    assert texts()["busy"] == "签约服务热线提示您坐席忙，请稍后。"  # the wording the issue fixes


@pytest.mark.parametrize("name", NAMES)
def test_a_prompt_is_speech_in_both_codecs(name: str) -> None:
    p = prompt(name)
    assert 2.0 < p.seconds < 12.0
    for codec, decode in (("PCMU", audioop.ulaw2lin), ("PCMA", audioop.alaw2lin)):
        pcm = decode(p.payload(codec), 2)
        assert len(pcm) == round(p.seconds * 8000) * 2
        assert audioop.rms(pcm, 2) > 300  # speech, not silence
    assert prompt(name) is p  # loaded once


def test_an_unknown_prompt_is_named() -> None:
    with pytest.raises(KeyError, match="no prompt named 'hello'"):
        prompt("hello")
