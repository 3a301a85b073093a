"""One resident's call, from INVITE to hang-up: greet, identify, 按1, route, dial, bridge, or promise
a callback — recorded, and written down at every step.

The record is opened before anything else happens, so every call that reaches the service
leaves a row whatever becomes of it. Each step updates it: who called (if a resident), the route
decision and its reason, every dial attempt with its outcome, the disposition, the recording.

Dispositions:
    connected  a human answered and talked with the caller
    missed     the caller waited for a human and nobody answered (busy, no answer, unreachable):
               the callback task is opened (or the call attached to the open one)
    abandoned  the caller hung up while a human was being rung: a callback is owed too
    ivr_only   the caller hung up before asking for a human (mid-greeting, at the menu)
    failed     the service could not handle the call (a bug, the journal's disk refusing): logged

While PostgreSQL is away the call goes on: its steps are written to the node's journal (see
recordings.call_log) and replayed when it is back; the caller is routed from the routing data in
memory, as an unknown caller (the duty desk) when the directory cannot be asked who calls.

The prompts and the order come from the issue's flow: greeting; "按1 转接您的家庭医生" (a key
outside the menu, or none, replays it, at most three times; after that the caller is put
through anyway, because a resident who cannot work the keypad still needs a doctor); every
step of the chain whose phones rang or refused is followed once by 「签约服务热线提示您坐席忙，请稍后」
(not once per ring group of the step, and the queue does not open with it again right after);
when all fail the caller hears that their doctor will call back within 8 hours. Someone who
declines (486/600/603) is not rung again for the call, from the chain or the queue.

The record's end_reason says why a call ended when its parties did not end it: 'media timeout'
(a leg sent no RTP for rtp_timeout_s: both phones may be gone without a BYE), 'max call length',
'recovered' (closed at the next start after the node died).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from handover.callbacks import CALLBACK_WINDOW, Callbacks
from handover.ownership import responsible, subject
from hotline.clock import Clock
from ivr.hunt import Answered, Dial, Hunt, NoPresence, keep_on_call
from ivr.prompts import prompt, prompt_file, queue_position
from ivr.queue import CallQueue, queue_key
from recordings.call_log import CallEntry, CallLog, Owed, unreachable
from recordings.call_records import CallerNumber, CallPlace, CallRecords, UnfinishedCall
from recordings.live import LiveCalls
from recordings.recorder import (
    AlignedStereo,
    Recording,
    RecordingError,
    StereoRecorder,
    cut_voicemail,
    repair,
    write_voicemail,
)
from routing.chain import ChainDecision, HotlineLine, RoutingData, route_chain
from routing.directory import Directory
from routing.people import Caller
from routing.presence import ON_CALL_TTL_S
from store.errors import reason_of
from store.pii import PiiVault
from telephony.bridge import bridge
from telephony.dialog_state import DialogState
from telephony.leg import MediaLeg
from telephony.prompts import Prompt

log = structlog.get_logger("ivr")

# How often the recorder takes audio from the call, and how often it makes it durable.
RECORD_TICK_S = 0.1
RECORD_FLUSH_EVERY = 10  # ticks: ≤ 1 s of audio lost to a crash
# A shorter message is taken as nothing said (the caller hung up or pressed # at the beep).
NOTHING_SAID_S = 0.5


@dataclass(frozen=True)
class FlowSettings:
    recordings_dir: Path
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    menu_timeout_s: float = 5.0
    menu_tries: int = 3
    # When everyone the caller waits for is busy: how long they wait in the queue (they may
    # press 1 to leave a message at once), and how long a message may be.
    queue_wait_s: float = 120.0
    voicemail_max_s: float = 60.0
    # How often a waiting caller hears their position again (hold audio in between).
    queue_announce_every_s: float = 20.0
    # Dead calls: a leg silent (no RTP) this long ends the call ('media timeout'); and no call
    # lasts longer than max_call_s ('max call length').
    rtp_timeout_s: float = 60.0
    max_call_s: float = 4 * 3600.0


class CallRecording:
    """The call's stereo recording: caller left, what the caller heard right."""

    def __init__(self, leg: MediaLeg, path: Path):
        self.leg = leg
        self.path = path
        self.writer = AlignedStereo(StereoRecorder(path), leg.codec)
        self.caller_side_from_bridge: list[bytes] | None = None
        # While the caller leaves a message, their side also goes here.
        self.message: list[bytes] | None = None
        leg.tap()
        leg.received_audio()  # from answer on
        # The flush runs in a thread (seek to the header, rewrite it, seek back): no frame may be
        # written meanwhile, from the pump or from anyone taking audio now (take_now, finish).
        self.io = asyncio.Lock()
        self.task = asyncio.create_task(self._pump(), name=f"record {path.name}")

    async def take_now(self) -> None:
        """Write what arrived up to now (e.g. the end of a voicemail), between flushes."""
        async with self.io:
            self.take()

    def take(self) -> None:
        if self.caller_side_from_bridge is None:
            left = self.leg.received_audio()
        else:  # the bridge reads the caller's audio; it hands us a copy
            left = b"".join(self.caller_side_from_bridge)
            self.caller_side_from_bridge.clear()
        if self.message is not None:
            self.message.append(left)
        self.writer.feed(left, self.leg.sent_audio())

    async def _pump(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(RECORD_TICK_S)
            async with self.io:
                self.take()
                ticks += 1
                if ticks % RECORD_FLUSH_EVERY == 0:
                    await asyncio.to_thread(self.writer.recorder.flush)

    async def finish(self):
        # Holding the lock, the pump is asleep or waiting for it, never mid-flush: cancelling it
        # cannot leave a flush thread writing under the close.
        async with self.io:
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.take()
        return await asyncio.to_thread(self.writer.close)


def recording_path(root: Path, offered_at: datetime, record_id: int | None, call_id: str) -> Path:
    """Named by the record; a call opened in the journal (PostgreSQL away) has no record id yet,
    its Call-ID (unique per record) names it alone."""
    safe_call_id = re.sub(r"[^A-Za-z0-9._-]", "_", call_id)[:48]
    prefix = f"{record_id:08d}" if record_id is not None else "journal"
    return root / f"{offered_at:%Y/%m/%d}" / f"{prefix}-{safe_call_id}.wav"


def voicemail_path(recording: Path) -> Path:
    """The caller's message, next to the call's recording."""
    return recording.with_name(recording.stem + "-voicemail.wav")


def call_place(caller: Caller | None, dialled: str | None, line: HotlineLine | None,
               on: Any) -> CallPlace:
    """Where a call belongs (the console's scope): the caller's center and district and the team
    of the contract in force on the day; for an unknown caller, the line's district and center.
    `line` is the number dialled as the routing data knows it (None: not a known line)."""
    number = line.number if line is not None else (dialled or None)
    number = number[:64] if number else None  # the To header's user part: whatever the PBX sent
    if caller is not None:
        contract = next((c for c in caller.contracts if c.in_force(on)), None)
        team_id = contract.doctor.team_id if contract is not None else None
        return CallPlace(number, caller.district_id, caller.center_id, team_id)
    if line is not None:
        return CallPlace(number, line.district_id, line.center_id)
    return CallPlace(number)


def chain_district(decision: ChainDecision) -> int | None:
    """The district of the people a chain rings (an unknown caller on no known line)."""
    return next((t.staff.district_id for t in decision.targets if t.staff.district_id is not None), None)


def callback_owner(caller: Caller | None, data: RoutingData | None, at: datetime,
                   decision: ChainDecision | None = None, *, first_routed: int | None = None) -> int | None:
    """Who owes the callback: whoever is responsible for the caller at the missed call's instant
    (handover.ownership: the family doctor by day, the night duty doctor by night, the desk when
    neither exists), so the task starts with the owner the shift change would give it. An unknown
    caller is the duty desk's whatever the routing data. Without routing data (PostgreSQL away at
    the start) a resident's is the first person the call was routed to (`decision`, or
    `first_routed` when only the stored route is left: crash recovery)."""
    if caller is None:
        return None
    if data is not None:
        return responsible(caller, at, data).staff_id
    if decision is not None and decision.targets:
        return decision.targets[0].staff.id
    return first_routed


class CallFlow:
    def __init__(self, *, records: CallRecords, callbacks: Callbacks, directory: Directory,
                 routing: Callable[[datetime], Awaitable[RoutingData]], vault: PiiVault, clock: Clock,
                 dial: Dial, settings: FlowSettings, presence: Any = None, queue: CallQueue | None = None,
                 call_log: CallLog | None = None, live: LiveCalls | None = None):
        # Live calls write through the call log (PostgreSQL, or the journal while it is away);
        # recovery at start-up works on PostgreSQL itself.
        self.records = records
        self.call_log = call_log if call_log is not None else CallLog(records, callbacks, None)
        self.routing = routing
        # Live staff state and claims (routing.presence); without it everyone is free.
        self.presence = presence if presence is not None else NoPresence()
        self.queue = queue if queue is not None else CallQueue(None)
        # The live board's feed (recordings.live): told every step, never waited for.
        self.live = live if live is not None else LiveCalls(None)
        self.callbacks = callbacks
        self.directory = directory
        self.vault = vault
        self.clock = clock
        self.dial = dial
        self.settings = settings
        # The dialogs of calls a previous run lost (recover), for the SIP agent to end with a BYE
        # once it is up (take_lost_dialogs).
        self.lost_dialogs: list[DialogState] = []

    async def handle(self, leg: Any) -> str:
        """Run one call to its end; returns the disposition. Never raises for a call's troubles:
        they are logged, the record says 'failed', and the caller is hung up on politely."""
        offered_at = self.clock.now()
        # The calling number as the trunk sent it (+86…, 0086…, 86…, a landline without its
        # area code, a sip:/tel: URI), normalized as the directory does: one canonical number.
        number = CallerNumber.of(self.vault, leg.calling_number, area_code=self.directory.area_code)
        bound = log.bind(call_id=leg.call_id, caller=number.masked)
        entry = self.call_log.open(leg.call_id, number, offered_at)
        try:
            await entry.open()
        except Exception as exc:
            # Nowhere to write the call (no journal configured and no database, or the journal's
            # disk refusing): refuse at once so the PBX can send the call elsewhere (its overflow,
            # a recorded announcement) instead of leaving the resident in silence.
            bound.error("call.refused_nowhere_to_write", why=reason_of(exc))
            with contextlib.suppress(Exception):
                await leg.refuse(503, "Service Unavailable", "the hotline cannot write the call down")
            return "failed"
        if entry.journaled:
            bound.warning("call.journaled", why="PostgreSQL is away: the call is written to the journal")
        call = _Call(self, leg, entry, number, offered_at, bound)
        self.live.offered(leg.call_id, record_id=entry.record_id, line=leg.dialled_number or None,
                          caller_masked=number.masked)
        cancelled = False
        try:
            disposition = await call.run()
        except asyncio.CancelledError:  # the service is stopping
            cancelled = True
            disposition = "failed"
            bound.warning("call.cut_by_shutdown")
            if call.waiting_for_human:
                await call.keep_message_cut_short(await call.owe_callback())
        except Exception:
            bound.exception("call.failed")
            disposition = "failed"
        await call.finish()
        try:
            await entry.ended(self.clock.now(), disposition, call.end_reason)
        except Exception:
            bound.exception("call.record_not_closed")
        self.live.ended(leg.call_id, disposition)
        bound.info("call.ended", disposition=disposition, record_id=entry.record_id, journaled=entry.journaled,
                   end_reason=call.end_reason)
        if cancelled:
            raise asyncio.CancelledError
        return disposition

    async def turn_away(self, leg: Any, why: str) -> None:
        """Refuse a call this node will not take (it is shutting down) with 503, so the PBX can
        try another node; the call still leaves its record ('failed', with why)."""
        offered_at = self.clock.now()
        number = CallerNumber.of(self.vault, leg.calling_number, area_code=self.directory.area_code)
        bound = log.bind(call_id=leg.call_id, caller=number.masked)
        try:
            await leg.refuse(503, "Service Unavailable", why)
        except Exception as exc:  # the caller gave up already
            bound.info("call.turn_away_failed", why=reason_of(exc))
        bound.info("call.turned_away", why=why)
        try:
            entry = self.call_log.open(leg.call_id, number, offered_at)
            await entry.open()
            line = None
            with contextlib.suppress(Exception):  # the routing data in memory; best effort
                data = await self.routing(offered_at)
                line = data.lines.get(leg.dialled_number) if leg.dialled_number else None
            await entry.placed(call_place(None, getattr(leg, "dialled_number", None), line, None))
            await entry.routed(None, f"turned away: {why}", [])
            await entry.ended(self.clock.now(), "failed")
        except Exception as exc:
            bound.error("call.record_not_written", why=reason_of(exc))

    async def recover(self) -> int:
        """Close what a previous run left open: repair its recordings, end its records as
        'failed' (end reason 'recovered'), and keep the promise to callers who were waiting for a
        human when it died — with the message a caller was leaving, cut from the repaired
        recording. Each call on its own: one that fails is closed with what is known and a
        recovery_note, and never stops the others or the start. The staff it held are free again
        (presence), and its phones are hung up once the SIP agent runs (take_lost_dialogs)."""
        now = self.clock.now()
        try:
            calls = await self.records.unfinished()
        except Exception as exc:
            log.error("recovery.unfinished_unreadable", why=reason_of(exc))
            return 0
        closed = 0
        for call in calls:
            states, notes = self.records.opened_dialogs(call)
            try:
                notes += await self._recover_one(call)
                await self.records.close_recovered(call.record_id, now, "failed", "; ".join(notes) or None)
            except Exception as exc:
                log.exception("recovery.call_failed", record_id=call.record_id)
                notes.append(f"recovery failed: {reason_of(exc)}")
                try:
                    await self.records.close_recovered(call.record_id, now, "failed", "; ".join(notes))
                except Exception:
                    log.exception("recovery.record_not_closed", record_id=call.record_id)
                    continue
            closed += 1
            for state in states:
                try:
                    self.lost_dialogs.append(DialogState.from_json(state))
                except ValueError as exc:
                    log.warning("recovery.dialog_unusable", record_id=call.record_id, why=str(exc))
            await self._free_staff(call)
        if closed:
            log.warning("recovery.closed_calls", count=closed, phones_to_hang_up=len(self.lost_dialogs))
        return closed

    def take_lost_dialogs(self) -> list[DialogState]:
        """The dialogs recovery found up, once: the caller sends each a BYE."""
        lost, self.lost_dialogs = self.lost_dialogs, []
        return lost

    async def _free_staff(self, call: UnfinishedCall) -> None:
        """Everyone the dead call rang or connected: their claim and on_call state, if this call
        still holds them (a later call's are left alone), so nobody is skipped as busy."""
        people = set(call.staff_ids) | {t["staff_id"] for t in call.route_targets
                                        if isinstance(t, dict) and isinstance(t.get("staff_id"), int)}
        for staff_id in sorted(people):
            try:
                await self.presence.call_ended(staff_id, call.call_id)
            except Exception as exc:  # Redis away: the state expires by itself
                log.warning("recovery.presence_not_cleared", record_id=call.record_id, staff_id=staff_id,
                            why=reason_of(exc))

    async def _recover_one(self, call: UnfinishedCall) -> list[str]:
        """Repair the recording, owe the callback, cut the message; what could not be done."""
        notes: list[str] = []
        fixed: Recording | None = None
        if call.recording_to_repair:
            try:
                fixed = await asyncio.to_thread(repair, Path(call.recording_to_repair))
                await self.records.recorded(call.record_id, str(fixed.path), fixed.seconds, fixed.sha256)
            except RecordingError as exc:
                log.warning("recovery.recording_lost", record_id=call.record_id, why=str(exc))
                notes.append(f"recording lost: {exc}")
        # Routed is waiting for a human, whether being rung, in the queue (everyone busy,
        # nobody rung) or leaving a message.
        offset_s = call.voicemail_offset_s
        if (call.routed or offset_s is not None) and not call.connected and call.number_hash is not None:
            owner = await self._recovered_owner(call)
            owed = await self.callbacks.owe_for_missed_call(
                call_record_id=call.record_id, resident_id=call.resident_id,
                number_hash=call.number_hash, number_encrypted=call.number_encrypted or b"",
                number_masked=call.number_masked, owner_staff_id=owner, missed_at=call.offered_at)
            if offset_s is not None and fixed is not None:
                await self._recover_voicemail(call.record_id, call.offered_at, fixed, offset_s, owed.task_id)
        return notes

    async def _recovered_owner(self, call: UnfinishedCall) -> int | None:
        """The owner a live call's callback would have had (callback_owner): the rule over the
        caller at the call's instant, from the stored route only without routing data."""
        data: RoutingData | None = None
        if self.routing is not None:
            try:
                data = await self.routing(call.offered_at)
            except Exception as exc:
                log.warning("recovery.owner_from_route", record_id=call.record_id, why=reason_of(exc))
        caller = await subject(self.directory.db, call.resident_id)
        first = next((t["staff_id"] for t in call.route_targets
                      if isinstance(t, dict) and isinstance(t.get("staff_id"), int)), None)
        return callback_owner(caller, data, call.offered_at, first_routed=first)

    async def _recover_voicemail(self, record_id: int, offered_at: datetime, recording: Recording,
                                 offset_s: float, task_id: int) -> None:
        """The message a crash cut short, from the repaired recording (its audio reached the disk
        as it was said, up to the last flush), attached to the caller's callback task."""
        try:
            message = await asyncio.to_thread(cut_voicemail, recording.path, offset_s,
                                              voicemail_path(recording.path), min_seconds=NOTHING_SAID_S)
        except RecordingError as exc:
            log.warning("recovery.voicemail_lost", record_id=record_id, why=str(exc))
            return
        if message is None:
            log.info("recovery.voicemail_nothing_said", record_id=record_id)
            return
        # The message ended where the recording ends; the recording starts at answer, moments
        # after the call was offered.
        await self.callbacks.attach_voicemail(
            task_id=task_id, call_record_id=record_id, path=str(message.path), seconds=message.seconds,
            sha256=message.sha256, recorded_at=offered_at + timedelta(seconds=recording.seconds))
        log.info("recovery.voicemail_saved", record_id=record_id, seconds=round(message.seconds, 1))


class _Call:
    def __init__(self, flow: CallFlow, leg: Any, entry: CallEntry, number: CallerNumber,
                 offered_at: datetime, log: Any):
        self.flow = flow
        self.leg = leg
        self.entry = entry
        self.number = number
        self.offered_at = offered_at
        self.log = log
        self.caller: Caller | None = None
        self.decision: ChainDecision | None = None
        self.recording: CallRecording | None = None
        self.connected = False
        self.line: HotlineLine | None = None  # the number dialled, as the routing data has it
        self.place: CallPlace | None = None
        # Why the call ended when its parties did not end it (the watchdog's 'media timeout' or
        # 'max call length'); None otherwise.
        self.end_reason: str | None = None
        self.staff_leg: MediaLeg | None = None  # while bridged to a human
        self.watchdog: asyncio.Task[None] | None = None
        # The caller has just heard 「坐席忙」 and nothing has rung since: the queue does not repeat it.
        self.busy_prompt_just_played = False

    @property
    def waiting_for_human(self) -> bool:
        return self.decision is not None and not self.connected

    @property
    def gone(self) -> bool:
        return self.leg.ended.is_set()

    async def run(self) -> str:
        flow = self.flow
        self.caller = await self._find_caller()
        if self.caller is not None:
            await self.entry.identified(self.caller.resident_id)
        self.log.info("call.identified" if self.caller else "call.unknown_caller",
                      resident_id=self.caller.resident_id if self.caller else None)
        await self._place()
        try:
            await self.leg.answer()
        except Exception:
            if self.gone:  # the caller gave up (CANCEL) before we answered: nobody to call back
                self.log.info("call.cancelled_before_answer")
                return "ivr_only"
            raise
        await self.entry.answered(flow.clock.now())
        self.answered_loop_time = asyncio.get_running_loop().time()  # the recording starts here
        self.watchdog = asyncio.create_task(self._watch(), name=f"watch {self.leg.call_id}")
        await self._keep_dialog(self.leg)
        await self._start_recording()

        # A resident who knows the menu may press 1 during the greeting (barge-in).
        if not await self.leg.play(await self._greeting(), barge_in=True) or not await self._menu():
            return "ivr_only"

        self.decision = await self._decide()
        hunt = Hunt(leg=self.leg, entry=self.entry, presence=flow.presence,
                    dial=flow.dial, now=flow.clock.now, log=self.log, live=flow.live)
        try:
            return await self._hunt(hunt)
        finally:
            with contextlib.suppress(Exception):
                await self._record_live_skips(hunt)

    async def _hunt(self, hunt: Hunt) -> str:
        """Ring the chain; queue if people were busy; voicemail and the callback promise."""
        assert self.decision is not None
        rung = await self._ring_chain(hunt, self.decision, busy_prompt=True)
        if rung == "connected":
            return rung
        if rung == "abandoned":
            await self.owe_callback()
            return rung
        if hunt.busy_seen or self._someone_busy(hunt):
            waited = await self._wait_in_queue(hunt)
            if waited == "connected":
                return "connected"
            if waited == "abandoned":
                await self.owe_callback()
                return "abandoned"
        message = await self._voicemail()
        await self._attach_message(await self.owe_callback(), message)
        if not self.gone:
            await self.leg.play(prompt("callback"))
            await self.leg.hangup()
        return "missed"

    async def _ring_chain(self, hunt: Hunt, decision: ChainDecision, *, busy_prompt: bool) -> str | None:
        """Ring the chain group by group: 'connected', 'abandoned' (the caller hung up), or None
        when nobody answered. With `busy_prompt`, a group whose phones rang or said busy (the
        caller waited for a person) is followed by 「坐席忙」; phones that are not registered, or
        people busy with other calls, are passed over at once."""
        for step in decision.steps:
            rang = False
            for group in step.groups():
                result = await hunt.ring_group(step, group)
                if result.answered is not None:
                    await self._talk(result.answered)
                    return "connected"
                if result.abandoned or self.gone:
                    return "abandoned"
                rang = rang or result.rang
            # once per failed step, not per group of it (ring order: one doctor after another)
            if rang:
                self.busy_prompt_just_played = False
                if busy_prompt:
                    if not await self.leg.play(prompt("busy")):
                        return "abandoned"
                    self.busy_prompt_just_played = True
        return None

    def _someone_busy(self, hunt: Hunt) -> bool:
        """The chain skipped someone for being on a call (presence), not for being away, and
        they have not declined this call: someone worth waiting for in the queue."""
        return any(k.busy and k.staff.id not in hunt.declined
                   for s in (self.decision.steps if self.decision else ()) for k in s.skipped)

    async def _wait_in_queue(self, hunt: Hunt) -> str:
        """Everyone is busy: the caller waits, hears their position and hold audio, and is put
        through as soon as someone is free and nobody waits ahead; 1 or the wait running out
        leads to voicemail. Returns 'connected', 'abandoned' or 'voicemail'."""
        flow, decision = self.flow, self.decision
        assert decision is not None
        people = [t.staff.id for s in decision.steps for t in s.targets] + \
                 [k.staff.id for s in decision.steps for k in s.skipped if k.busy]
        key = queue_key(people, decision.service)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + flow.settings.queue_wait_s
        await flow.queue.join(key, self.leg.call_id)
        flow.live.queued(self.leg.call_id, key)
        self.log.info("queue.joined", queue=key)
        try:
            first = True
            while loop.time() < deadline and not self.gone:
                ahead = await flow.queue.ahead(key, self.leg.call_id)
                # 「坐席忙」 opens the wait, unless the chain's last failed step has just played it
                opening = ["busy"] if first and not self.busy_prompt_just_played else []
                for name in opening + [queue_position(ahead), "queue_options"]:
                    if not await self.leg.play(prompt(name), barge_in=True):
                        return "abandoned"
                    if await self._pressed_1():
                        return "voicemail"
                first = False
                until = min(deadline, loop.time() + flow.settings.queue_announce_every_s)
                while loop.time() < until:
                    if not await self.leg.play(prompt("hold"), barge_in=True):
                        return "abandoned"
                    if await self._pressed_1():
                        return "voicemail"
                # Once per announcement cycle, not on every chime: without presence a phone that
                # said busy would otherwise be rung again every few seconds.
                if ahead == 0 and loop.time() < deadline and await self._someone_free(hunt):
                    return "connected"
            return "abandoned" if self.gone else "voicemail"
        finally:
            await flow.queue.leave(key, self.leg.call_id)
            flow.live.left_queue(self.leg.call_id)

    async def _pressed_1(self) -> bool:
        digits = await self.leg.collect_digits(1, 0.0)
        if digits:
            await self._note_key(digits, "queue")
        return digits == "1"

    async def _note_key(self, key: str, menu: str) -> None:
        """A key pressed at a menu, for the call's timeline; a note lost must not cost the call."""
        try:
            await self.entry.key_pressed(self.flow.clock.now(), key, menu)
        except Exception as exc:
            self.log.warning("ivr.key_not_noted", why=reason_of(exc))

    async def _someone_free(self, hunt: Hunt) -> bool:
        """Ring whoever of the chain is free now (no busy prompts between: the caller is back to
        the queue's hold audio if nobody answers)."""
        decision = await self._decide(store=False)
        return await self._ring_chain(hunt, decision, busy_prompt=False) == "connected"

    async def _voicemail(self) -> Recording | None:
        """The caller's message after the beep, until #, hang-up or the limit; None when the
        caller left before the beep or said nothing."""
        if self.gone or self.recording is None:
            return None
        if not await self.leg.play(prompt("voicemail"), barge_in=False) or not await self.leg.play(prompt("beep")):
            return None
        self.recording.message = []
        # No await between the line above and this read: the message's first byte goes to
        # exactly this position in the recording's caller channel.
        await self._note_voicemail(self.recording.writer.left_seconds)
        await self.leg.collect_digits(64, self.flow.settings.voicemail_max_s, terminator="#")
        return await self._save_message()

    async def _save_message(self) -> Recording | None:
        """The message gathered since the beep, written next to the recording; None when
        nothing was said."""
        assert self.recording is not None and self.recording.message is not None
        await self.recording.take_now()  # what arrived up to now
        chunks, self.recording.message = self.recording.message, None
        payload = b"".join(chunks)
        if len(payload) < NOTHING_SAID_S * 8000:  # G.711: 8000 bytes a second
            # else a crash while the caller hears the callback promise would have recovery
            # take those seconds of silence for a message
            await self._note_voicemail(None)
            return None
        path = voicemail_path(self.recording.path)
        message = await asyncio.to_thread(write_voicemail, path, payload, self.leg.codec)
        self.log.info("voicemail.saved", seconds=round(message.seconds, 1), path=str(path))
        return message

    async def keep_message_cut_short(self, owed: Owed | None) -> None:
        """The service is stopping while the caller leaves a message: keep what they said."""
        if owed is None or self.recording is None or self.recording.message is None:
            return
        await self._attach_message(owed, await self._save_message())

    async def _attach_message(self, owed: Owed | None, message: Recording | None) -> None:
        if message is not None and owed is not None:
            await self.entry.attach_voicemail(path=str(message.path), seconds=message.seconds,
                                              sha256=message.sha256, recorded_at=self.flow.clock.now())

    async def _note_voicemail(self, offset_s: float | None) -> None:
        """Tell the record where the message starts (None: nothing was said). Only recovery
        after a crash needs it: failing to store it must not cost the caller the message."""
        try:
            if offset_s is None:
                await self.entry.voicemail_nothing_said()
            else:
                await self.entry.voicemail_started(offset_s)
        except Exception as exc:
            self.log.warning("voicemail.offset_not_stored", why=reason_of(exc))

    async def _find_caller(self) -> Caller | None:
        """Who calls. With PostgreSQL away the directory cannot say: the caller is taken for
        unknown (routed to the duty desk), and the record says so."""
        try:
            return await self.flow.directory.find_caller(self.leg.calling_number)
        except Exception as exc:
            if not unreachable(exc):
                raise
            self.log.warning("call.caller_not_identified", why=f"PostgreSQL away: {reason_of(exc)}")
            return None

    async def _place(self) -> None:
        """The line dialled, and where the call belongs, written before anything else can end it
        (a caller who hangs up during the greeting is still one of the district's calls)."""
        dialled = self.leg.dialled_number
        try:
            data = await self.flow.routing(self.flow.clock.now())
            self.line = data.lines.get(dialled) if dialled else None
        except Exception as exc:  # where the call belongs must not cost the call
            self.log.warning("call.line_unknown", why=reason_of(exc))
        self.place = call_place(self.caller, dialled, self.line,
                                self.offered_at.astimezone(self.flow.settings.tz).date())
        await self.entry.placed(self.place)
        # written first, then told: a board that asks on this event finds the call in its scope
        self.flow.live.placed(self.leg.call_id, resident_id=self.caller.resident_id if self.caller else None,
                              district_id=self.place.district_id, center_id=self.place.center_id,
                              team_id=self.place.team_id)

    async def _greeting(self) -> Prompt:
        """The greeting of the number dialled (a center's own line may have its own)."""
        line = self.line
        if line is not None and line.greeting:
            try:
                return await asyncio.to_thread(prompt_file, line.greeting)
            except Exception as exc:  # a missing or unreadable file must not cost the call
                self.log.warning("ivr.line_greeting_unusable", line=line.number, path=line.greeting,
                                 why=str(exc))
        return prompt("greeting")

    async def _decide(self, store: bool = True) -> ChainDecision:
        """The chain for this call, with the live state of everyone in it (one Redis round trip)."""
        flow = self.flow
        now = flow.clock.now()
        data = await flow.routing(now)
        line = self.line
        draft = route_chain(self.caller, now, data, line=line)
        people = [t.staff.id for s in draft.steps for t in s.targets]
        states = await flow.presence.states(people) if people else {}
        decision = route_chain(self.caller, now, data, states, line=line) \
            if states else draft
        if not store:
            return decision
        explained = decision.as_json()
        await self.entry.routed(decision.service, decision.reason, explained["targets"], explained)
        if self.place is not None and self.place.district_id is None and chain_district(decision):
            # an unknown caller on no known line: the district whose desk the chain rings
            self.place = CallPlace(self.place.line, chain_district(decision))
            await self.entry.placed(self.place)
        place = self.place or CallPlace(None)
        flow.live.routed(self.leg.call_id, route_reason=decision.reason,
                         resident_id=self.caller.resident_id if self.caller else None,
                         district_id=place.district_id, center_id=place.center_id, team_id=place.team_id,
                         record_id=self.entry.record_id)
        self.log.info("call.routed", service=decision.service, reason=decision.reason,
                      steps=[s.name for s in decision.steps], targets=len(decision.targets))
        return decision

    async def _record_live_skips(self, hunt: Hunt) -> None:
        """People skipped because another call held them, added to the stored explanation."""
        if hunt.claims_elsewhere:
            await self.entry.explained_more([
                {"staff_id": t.staff.id, "name": t.staff.name, "reason": f"{t.staff.name} {why}"}
                for t, why in hunt.claims_elsewhere])

    async def _menu(self) -> bool:
        """True when the caller asked for a human (or could not work the menu); False if gone."""
        tries = self.flow.settings.menu_tries
        for attempt in range(1, tries + 1):
            if not await self.leg.play(prompt("menu"), barge_in=True):
                return False
            digits = await self.leg.collect_digits(1, self.flow.settings.menu_timeout_s)
            if digits:
                await self._note_key(digits, "menu")
            if self.gone:
                return False
            if digits == "1":
                return True
            self.log.info("ivr.menu_invalid", pressed=digits or None, attempt=attempt)
            if attempt < tries and digits and not await self.leg.play(prompt("invalid")):
                return False
        self.log.info("ivr.menu_gave_up", tries=tries)
        return True

    async def _talk(self, answered: Answered) -> None:
        """Bridge the caller with the person who answered until either hangs up."""
        flow = self.flow
        staff_id = answered.target.staff.id
        self.connected = True
        self.staff_leg = answered.leg
        self.leg.stop_playing()
        await self._keep_dialog(answered.leg)
        await flow.presence.call_started(staff_id, self.leg.call_id)
        flow.live.answered(self.leg.call_id, staff_id)
        if self.recording is not None:
            self.recording.caller_side_from_bridge = []
        side = self.recording.caller_side_from_bridge if self.recording else None

        def keep_caller_side(from_caller: bytes, _from_staff: bytes, _codec: str) -> None:
            if side is not None and from_caller:
                side.append(from_caller)

        # her on_call state expires by itself (for a node that dies mid-call): refresh it
        refreshing = asyncio.create_task(keep_on_call(flow.presence, staff_id, self.leg.call_id, ON_CALL_TTL_S))
        notes: set[asyncio.Task[None]] = set()
        for who, party in (("caller", self.leg), ("staff", answered.leg)):
            if hasattr(party, "on_hold_changed"):
                party.on_hold_changed = partial(self._hold_changed, who, notes)
        try:
            await bridge(self.leg, answered.leg, on_audio=keep_caller_side)
        finally:
            for party in (self.leg, answered.leg):
                if hasattr(party, "on_hold_changed"):
                    party.on_hold_changed = None
            if notes:
                await asyncio.wait(notes, timeout=2)
            self.staff_leg = None
            refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refreshing  # no refresh may land after the call's end clears her state
            await flow.presence.call_ended(staff_id, self.leg.call_id)

    def _hold_changed(self, side: str, notes: set[asyncio.Task[None]], on: bool) -> None:
        """One side put the other on hold (or resumed): noted in the record with where it falls
        in the recording. The held side hears what the holder sends (a chime, or silence)."""
        offset_s = round(asyncio.get_running_loop().time() - getattr(self, "answered_loop_time", 0.0), 1)
        self.log.info("call.hold" if on else "call.resume", side=side, offset_s=offset_s)
        task = asyncio.create_task(self._note_hold(side, on, offset_s))
        notes.add(task)
        task.add_done_callback(notes.discard)

    async def _note_hold(self, side: str, on: bool, offset_s: float) -> None:
        try:
            await self.entry.held(self.flow.clock.now(), side, on, offset_s)
        except Exception as exc:  # a note lost must not cost the call
            self.log.warning("call.hold_not_noted", why=reason_of(exc))

    async def _keep_dialog(self, leg: Any) -> None:
        """Store the leg's SIP dialog in the record: a node restarted after a crash hangs up
        its phone from it. Only recovery needs it: failing to store it must not cost the call."""
        dialog_state = getattr(leg, "dialog_state", None)
        if dialog_state is None:
            return
        try:
            await self.entry.dialog_established(dialog_state().to_json())
        except Exception as exc:
            self.log.warning("call.dialog_not_stored", why=reason_of(exc))

    async def _watch(self) -> None:
        """End a dead call: a leg (the caller's, or the human's while bridged) that sent no RTP
        for rtp_timeout_s — both phones may have vanished without a BYE — or a call longer than
        max_call_s. Both legs are hung up (BYE); the flow then ends as it would on a hang-up
        and the record says why. A leg on hold sends no RTP by design and is passed over (SIP
        session refresh keeps it alive instead, once holding exists)."""
        settings = self.flow.settings
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + settings.max_call_s
        tick = min(1.0, settings.rtp_timeout_s / 4)
        while not self.gone:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.leg.ended.wait(), tick)
            legs = [leg for leg in (self.leg, self.staff_leg) if leg is not None and not leg.ended.is_set()]
            silent = [leg for leg in legs if not leg.on_hold and leg.silent_for() >= settings.rtp_timeout_s]
            if silent:
                self.end_reason = "media timeout"
                self.log.warning("call.media_timeout", silent_legs=[leg.call_id for leg in silent],
                                 timeout_s=settings.rtp_timeout_s)
            elif legs and loop.time() >= ends_at:
                self.end_reason = "max call length"
                self.log.warning("call.max_length", max_call_s=settings.max_call_s)
            else:
                continue
            for leg in legs:
                try:
                    await leg.hangup()
                except Exception as exc:  # the BYE is retransmitted by telephony; nothing to add
                    self.log.warning("call.hangup_failed", leg=leg.call_id, why=reason_of(exc))
            return

    async def _start_recording(self) -> None:
        path = recording_path(self.flow.settings.recordings_dir, self.offered_at, self.entry.record_id,
                              self.leg.call_id)
        await self.entry.recording_started(str(path))
        self.recording = CallRecording(self.leg, path)

    async def _routing_data(self) -> RoutingData | None:
        """The routing data of the call's instant (cached in memory: no round trip), or None."""
        try:
            return await self.flow.routing(self.offered_at)
        except Exception as exc:
            self.log.warning("callback.owner_from_route", why=reason_of(exc))
            return None

    async def owe_callback(self) -> Owed | None:
        if self.number.hash is None:
            self.log.warning("callback.no_number", why="withheld or not a phone number; nobody to call back")
            return None
        owed = await self.entry.owe_callback(
            resident_id=self.caller.resident_id if self.caller else None,
            owner_staff_id=callback_owner(self.caller, await self._routing_data(), self.offered_at,
                                          self.decision),
            missed_at=self.offered_at)
        if owed is not None:
            self.log.info("callback.owed", task_id=owed.task_id, new=owed.created,
                          due_at=(owed.due_at or self.offered_at + CALLBACK_WINDOW).isoformat(),
                          journaled=owed.task_id is None)
        return owed

    async def finish(self) -> None:
        """Hang up if still up, and close the recording into the record."""
        if self.watchdog is not None:
            self.watchdog.cancel()
            try:
                await self.watchdog
            except asyncio.CancelledError:
                pass
            except Exception:
                self.log.exception("call.watchdog_failed")
        if not self.gone:
            with contextlib.suppress(Exception):
                await self.leg.hangup()
        if self.recording is not None:
            try:
                done = await self.recording.finish()
                await self.entry.recorded(str(done.path), done.seconds, done.sha256)
            except Exception:
                self.log.exception("recording.not_finalized", path=str(self.recording.path))
