"""The hotline's default Mandarin prompts (ivr/prompts/*.wav, made by scripts/make_prompts.sh).

Loaded and encoded once per process; the IVR flow asks for them by name.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from telephony.prompts import Prompt

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
# What each prompt is for; the spoken text is in prompts/texts.tsv.
NAMES = ("greeting", "menu", "busy", "callback", "invalid", "desk")


@cache
def prompt(name: str) -> Prompt:
    if name not in NAMES:
        raise KeyError(f"no prompt named {name!r}; the prompts are {', '.join(NAMES)}")
    return Prompt.load(PROMPT_DIR / f"{name}.wav")


def texts() -> dict[str, str]:
    lines = (PROMPT_DIR / "texts.tsv").read_text(encoding="utf-8").splitlines()
    return dict(line.split("\t", 1) for line in lines if line)
