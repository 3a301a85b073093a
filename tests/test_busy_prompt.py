"""When 「坐席忙」 plays (issue 8), as pure logic of the flow's chain ringing: once per step whose
phones rang or refused — not once per ring group of a step — and never for a step nobody could be
rung in. Over SIP: tests/test_call_flow.py and test_chain_calls.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from ivr.flow import _Call
from ivr.hunt import GroupResult
from ivr.prompts import prompt


class Leg:
    """What the flow plays to the caller, by prompt name."""

    call_id = "c"

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.played: list[str] = []

    async def play(self, what, *, barge_in: bool = False) -> bool:
        self.played.append(next(n for n in ("busy", "ringback") if prompt(n) is what))
        return True


@dataclass
class Step:
    name: str
    rounds: list[bool]  # per ring group: did a phone ring or refuse

    def groups(self) -> list[tuple[str, ...]]:
        return [(f"{self.name}-{i}",) for i in range(len(self.rounds))]


class Hunt:
    def __init__(self, steps: list[Step]):
        self.outcomes = {f"{s.name}-{i}": rang for s in steps for i, rang in enumerate(s.rounds)}

    async def ring_group(self, step: Step, group: tuple[str, ...]) -> GroupResult:
        return GroupResult(rang=self.outcomes[group[0]])


@dataclass
class Decision:
    steps: tuple[Step, ...]


async def ring(steps: list[Step], busy_prompt: bool = True) -> tuple[list[str], bool]:
    leg = Leg()
    call = _Call(None, leg, 1, None, None, structlog.get_logger())  # type: ignore[arg-type]
    assert await call._ring_chain(Hunt(steps), Decision(tuple(steps)), busy_prompt=busy_prompt) is None  # type: ignore[arg-type]
    return leg.played, call.busy_prompt_just_played


async def test_once_per_step_that_rang_not_per_ring_group() -> None:
    # night: two duty doctors in ring order who both rang out, the backup unreachable, the desk refusing
    played, just_played = await ring([Step("duty", [True, True]), Step("backup", [False]), Step("desk", [True])])
    assert played == ["busy", "busy"]
    assert just_played  # the desk's failure was the last thing heard: the queue does not repeat it


async def test_no_prompt_for_steps_nobody_could_be_rung_in() -> None:
    played, just_played = await ring([Step("own_doctor", [False]), Step("assistant", [False, False])])
    assert played == [] and not just_played


async def test_a_prompt_is_not_taken_for_just_played_once_a_later_step_rang_silently() -> None:
    played, just_played = await ring([Step("own_doctor", [True])], busy_prompt=False)  # the queue's re-ringing
    assert played == [] and not just_played
