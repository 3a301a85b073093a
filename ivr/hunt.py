"""Ringing a route's chain for one caller: step by step, ring group by ring group.

Each person is claimed before being rung (routing.presence: an atomic claim in Redis shared by
every service node), so two calls never ring the same doctor at once: the second call finds
her claimed and moves on. A group of several people (duty doctors on the same ring position)
rings together; the first to answer takes the call and the others are cancelled. Every attempt
is written to dial_attempts with its outcome; a person whose phone is not registered is marked
offline for a while so the next calls skip them at once.

The caller hears ringback (回铃音) from the moment the first phone of a group says it rings
until someone answers or the group gives up; before that, and for phones that never ring, the
line stays quiet rather than pretending. The caller hangs up at any moment: ringing stops
(CANCEL) and the hunt ends 'abandoned'.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ivr.prompts import prompt
from recordings.call_log import CallEntry
from recordings.live import LiveCalls
from routing.chain import Step, Target
from telephony.dialer import Dialed, DialOutcome
from telephony.leg import MediaLeg

# A claim outlives the ring timeout by this much (the dial's own bookkeeping, a slow CANCEL).
CLAIM_MARGIN_S = 10.0
# Final responses of a person declining the call (Busy Here, Busy Everywhere, Decline): they are
# not rung again for the same call, neither later in the chain nor from the queue.
DECLINED_STATUSES = (486, 600, 603)


class Presence(Protocol):
    """What the hunt needs of routing.presence."""

    async def claim(self, staff_id: int, call_id: str, ttl_s: float) -> bool: ...
    async def release(self, staff_id: int, call_id: str) -> None: ...
    async def call_started(self, staff_id: int, call_id: str) -> None: ...
    async def call_ended(self, staff_id: int, call_id: str) -> None: ...
    async def mark_offline(self, staff_id: int) -> None: ...
    async def extend(self, staff_id: int, call_id: str, ttl_s: float) -> bool: ...


async def keep_on_call(presence: Presence, staff_id: int, call_id: str, ttl_s: float) -> None:
    """Refresh someone's on_call state while the call lasts (cancel this when it ends).

    The state expires after `ttl_s` so that a node that dies mid-call does not leave the doctor
    "busy" for ever; a call that outlives it would otherwise make her ringable while she talks.
    Refreshed at a third of the expiry, so one lost refresh (Redis away for a moment) is harmless.
    """
    while True:
        await asyncio.sleep(ttl_s / 3)
        await presence.extend(staff_id, call_id, ttl_s)
        me = asyncio.current_task()
        if me is not None and me.cancelling():
            # The cancel arrived while the Redis client was reading and the client swallowed it
            # (seen twice in the suite: the loop went on refreshing a finished call, and the
            # canceller waited for ever). The request is still counted on the task: honour it.
            raise asyncio.CancelledError(f"keep_on_call {call_id} cancelled")


class NoPresence:
    """Everyone is free and nothing is shared: for a single node without Redis, and tests."""

    async def states(self, staff_ids: list[int]) -> dict[int, Any]:
        return {}

    async def claim(self, staff_id: int, call_id: str, ttl_s: float) -> bool:
        return True

    async def release(self, staff_id: int, call_id: str) -> None: ...
    async def call_started(self, staff_id: int, call_id: str) -> None: ...
    async def call_ended(self, staff_id: int, call_id: str) -> None: ...
    async def mark_offline(self, staff_id: int) -> None: ...

    async def extend(self, staff_id: int, call_id: str, ttl_s: float) -> bool:
        return True


Dial = Callable[..., Awaitable[Dialed]]


@dataclass
class Answered:
    target: Target
    leg: MediaLeg


@dataclass
class GroupResult:
    answered: Answered | None = None
    rang: bool = False  # someone's phone rang or said busy (the caller waited for a person)
    abandoned: bool = False  # the caller hung up while ringing
    claimed_elsewhere: list[Target] | None = None  # ringing or talking for another call


class Hunt:
    def __init__(self, *, leg: Any, entry: CallEntry, presence: Presence,
                 dial: Dial, now: Callable[[], Any], log: Any, live: LiveCalls | None = None):
        self.leg = leg
        self.entry = entry
        self.presence = presence
        self.dial = dial
        self.now = now
        self.log = log
        self.live = live if live is not None else LiveCalls(None)
        self.claims_elsewhere: list[tuple[Target, str]] = []  # for the explanation
        # someone in the chain was claimed by another call: worth queueing (not someone who
        # declined: they will not be rung again for this call)
        self.busy_seen = False
        self.declined: set[int] = set()  # staff ids who declined this call

    async def ring_group(self, step: Step, group: Sequence[Target]) -> GroupResult:
        """Claim and ring everyone in the group together; the first to answer wins."""
        call_id = self.leg.call_id
        claimed, elsewhere = [], []
        for target in [t for t in group if t.staff.id not in self.declined]:
            if await self.presence.claim(target.staff.id, call_id, step.ring_timeout_s + CLAIM_MARGIN_S):
                claimed.append(target)
            else:
                elsewhere.append(target)
                self.busy_seen = True
                self.claims_elsewhere.append((target, "busy (ringing or on another call) → skipped"))
                self.log.info("hunt.claimed_elsewhere", staff_id=target.staff.id, step=step.name)
        if not claimed:
            return GroupResult(claimed_elsewhere=elsewhere)
        attempts = []
        ringing = asyncio.Event()
        # The attempts are written before the live feed says who rings: a console that pops the
        # caller's card on that event may show it to a person only while an attempt names her
        # (routing/scope.py screen_pop), so an event ahead of the rows would pop nothing.
        seqs = [await self.entry.dial_started(target.staff.id, target.staff.sip_uri or "", self.now())
                for target in claimed]
        self.live.ringing(call_id, [t.staff.id for t in claimed], {t.staff.id: t.reason for t in claimed})
        for target, seq in zip(claimed, seqs, strict=True):
            attempts.append((target, seq, asyncio.create_task(self.dial(
                target.staff.sip_uri, step.ring_timeout_s, caller_display=self.leg.calling_number,
                codecs=(self.leg.codec, "PCMU" if self.leg.codec == "PCMA" else "PCMA"),
                on_ringing=ringing.set))))
        result = GroupResult(claimed_elsewhere=elsewhere)
        ringback = asyncio.create_task(self._ringback(ringing))
        try:
            result = await self._first_answer(attempts, result)
        finally:
            ringback.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ringback
            self.leg.stop_playing()
            if result.answered is None:
                self.live.ring_stopped(call_id)
            for target, _seq, _task in attempts:
                if result.answered is None or result.answered.target is not target:
                    await self.presence.release(target.staff.id, call_id)
        return result

    async def _ringback(self, ringing: asyncio.Event) -> None:
        """Once a phone rings, the ringback tone until cancelled (or the caller hangs up)."""
        await ringing.wait()
        while await self.leg.play(prompt("ringback")):
            pass

    async def _first_answer(self, attempts: list[tuple[Target, int, asyncio.Task[Dialed]]],
                            result: GroupResult) -> GroupResult:
        pending = {task for _, _, task in attempts}
        caller_gone = asyncio.create_task(self.leg.ended.wait())
        outcome_of: dict[asyncio.Task[Dialed], str] = {}
        try:
            while pending and result.answered is None:
                done, _ = await asyncio.wait(pending | {caller_gone}, return_when=asyncio.FIRST_COMPLETED)
                if caller_gone in done:
                    result.abandoned = True
                    break
                for task in done:
                    pending.discard(task)
                    dialed = task.result()
                    outcome_of[task] = dialed.outcome.value
                    result.rang = result.rang or dialed.rang or dialed.outcome in (
                        DialOutcome.BUSY, DialOutcome.NO_ANSWER, DialOutcome.REJECTED, DialOutcome.ANSWERED)
                    target = next(t for t, _, x in attempts if x is task)
                    if dialed.outcome is DialOutcome.ANSWERED and dialed.leg is not None:
                        if result.answered is None and not self.leg.ended.is_set():
                            result.answered = Answered(target, dialed.leg)
                        else:  # a second answer in a ring-all group, or the caller just left
                            await dialed.leg.hangup()
                            outcome_of[task] = "cancelled"
                    elif dialed.status in DECLINED_STATUSES:
                        self.declined.add(target.staff.id)
                        self.log.info("hunt.declined", staff_id=target.staff.id, status=dialed.status)
                    elif dialed.outcome is DialOutcome.UNREACHABLE:
                        await self.presence.mark_offline(target.staff.id)
        finally:
            caller_gone.cancel()
            for task in pending:  # the others still ringing: CANCEL
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                outcome_of[task] = "cancelled"
            for _target, seq, task in attempts:
                await self.entry.dial_ended(seq, outcome_of.get(task, "cancelled"), self.now())
        if result.abandoned and result.answered is not None:
            await result.answered.leg.hangup()
            result.answered = None
        return result
