"""The hotline's default Mandarin prompts (ivr/prompts/*.wav, made by scripts/make_prompts.sh).

Loaded and encoded once per process; the IVR flow asks for them by name.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from telephony.prompts import Prompt

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
# What each prompt is for; the spoken text is in prompts/texts.tsv.
NAMES = ("greeting", "menu", "busy", "callback", "invalid", "desk", "queue_next", "queue_many",
         *(f"queue_{n}" for n in range(1, 10)), "queue_options", "voicemail", "beep", "hold",
         "ringback")


def queue_position(ahead: int) -> str:
    """The prompt telling a caller how many callers are ahead of them."""
    if ahead <= 0:
        return "queue_next"
    return f"queue_{ahead}" if ahead <= 9 else "queue_many"


# A district's own recordings by name (ivr/prompt_overrides.py keeps this equal to the table).
_overrides: dict[str, Prompt] = {}


def use_overrides(found: dict[str, Prompt]) -> None:
    """Play these instead of the shipped prompts of the same names (replaces the earlier set)."""
    global _overrides
    _overrides = dict(found)


def prompt(name: str) -> Prompt:
    custom = _overrides.get(name)
    return custom if custom is not None else _shipped(name)


@cache
def _shipped(name: str) -> Prompt:
    if name not in NAMES:
        raise KeyError(f"no prompt named {name!r}; the prompts are {', '.join(NAMES)}")
    return Prompt.load(PROMPT_DIR / f"{name}.wav")


def texts() -> dict[str, str]:
    lines = (PROMPT_DIR / "texts.tsv").read_text(encoding="utf-8").splitlines()
    return dict(line.split("\t", 1) for line in lines if line)


@cache
def prompt_file(path: str) -> Prompt:
    """A prompt of a hotline line's own (e.g. a center's greeting), loaded and encoded once."""
    return Prompt.load(Path(path))
