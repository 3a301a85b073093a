"""Click-to-call: a staff member calls a task's resident back through the hotline (issue 11).

The console or `hotline tasks call` writes a request (recordings.call_requests); a service node
takes it and places the call:

1. the call record is written first (direction 'outbound', the task's id, the resident's number,
   where the staff member works), so every attempt leaves a record as an inbound call does;
2. the staff member is claimed in presence (no hotline call rings her meanwhile) and her own
   softphone is rung (its SIP address; the PBX knows where it is registered);
3. when she answers, the resident's number is dialled out through the PBX to the PSTN trunk,
   shown the hotline's number (P-Asserted-Identity); she hears ringback once it rings;
4. when the resident answers, the request turns 'connected' (unless it was cancelled that
   instant: then both are hung up), and the two are bridged and recorded in stereo like an
   inbound call (resident left, what the resident heard right) until either hangs up.

A cancel before the resident answers (the request marked 'cancelled', told by NOTIFY) hangs up
both legs: a ringing phone gets CANCEL, an answered one BYE. So does the staff member hanging up
while the resident's phone rings. Every dial is a dial_attempts row (her phone first, then the
resident's, by masked number). The outcome goes to the request row and to `on_outcome(task_id,
staff_id, call_record_id, outcome)` — where the task model records the attempt or the evidence.

A request a dead node held is never placed again (recordings.call_requests); at start-up this
node closes its own, and the call records they wrote are closed by the call flow's recovery
(node, ended_at NULL), which also sends BYE to the phones from the dialogs stored with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from hotline.clock import Clock
from ivr.flow import CallRecording, recording_path
from ivr.hunt import CLAIM_MARGIN_S, NoPresence, keep_on_call
from ivr.prompts import prompt
from recordings.call_records import CallerNumber, CallPlace, CallRecords
from recordings.call_requests import CHANNEL, LEASE_S, CallRequest, CallRequests, task_target
from routing.presence import ON_CALL_TTL_S
from routing.records import PHONE
from store import db
from store.errors import reason_of
from store.pii import PiiVault
from telephony.bridge import bridge
from telephony.dialer import Dialed, DialOutcome

log = structlog.get_logger("ivr.click_to_call")

OnOutcome = Callable[[int, int, int | None, str], Awaitable[None]]
Dial = Callable[..., Awaitable[Dialed]]
# How often a node looks for requests it may have missed a NOTIFY for, and sweeps lost ones.
POLL_S = 2.0
RECONNECT_MAX_S = 30.0
# What the staff member's phone shows while it rings for a call she asked for.
STAFF_DISPLAY = "hotline callback"

_STAFF_OUTCOME = {DialOutcome.BUSY: "staff_busy", DialOutcome.UNREACHABLE: "staff_unreachable"}
_RESIDENT_OUTCOME = {DialOutcome.BUSY: "busy", DialOutcome.NO_ANSWER: "no_answer",
                     DialOutcome.UNREACHABLE: "unreachable"}
# The record's disposition for each outcome (recordings.call_records DISPOSITIONS).
_DISPOSITION = {"answered": "connected", "cancelled": "abandoned", "failed": "failed"}


@dataclass(frozen=True)
class ClickToCallSettings:
    recordings_dir: Path
    registrar_host: str  # residents' numbers are dialled as sip:<number>@<registrar host>
    caller_id: str = ""  # the hotline's number residents are shown ("" : the trunk's own)
    staff_ring_s: float = 30.0
    resident_ring_s: float = 45.0
    # Dead calls, as for inbound ones (ivr.flow FlowSettings): a leg silent this long, or a call
    # this long, is hung up on both sides and the record's end_reason says so.
    rtp_timeout_s: float = 60.0
    max_call_s: float = 4 * 3600.0


class _Cancelled(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ClickToCall:
    """On a service node: takes click-to-call requests and places them, one task each."""

    def __init__(self, *, requests: CallRequests, records: CallRecords, pool: asyncpg.Pool,
                 database_url: str, vault: PiiVault, clock: Clock, dial: Dial, node: str,
                 settings: ClickToCallSettings, presence: Any = None, on_outcome: OnOutcome | None = None,
                 lease_s: float = LEASE_S):
        self.requests = requests
        self.records = records
        self.pool = pool
        self.database_url = database_url
        self.vault = vault
        self.clock = clock
        self.dial = dial
        self.node = node
        self.settings = settings
        self.presence = presence if presence is not None else NoPresence()
        self.on_outcome = on_outcome
        self.lease_s = lease_s
        self.calls: dict[int, asyncio.Task[str]] = {}
        self._cancel: dict[int, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.taking = True  # False while the node winds down: no new requests
        self.listening = asyncio.Event()

    # -- the node's loop --------------------------------------------------------------------

    async def start(self) -> None:
        """Close what a previous run of this node held, then listen and take requests."""
        try:
            for lost in await self.requests.close_own(self.node, self.clock.now()):
                log.warning("click_to_call.closed_at_start", request_id=lost.id, outcome=lost.outcome)
                await self._tell(lost)
        except Exception as exc:  # the sweep of another node (or ours, later) closes them
            log.error("click_to_call.not_recovered", why=reason_of(exc))
        self._tasks = [asyncio.create_task(self._listen_forever(), name="click-to-call: listen"),
                       asyncio.create_task(self._work_forever(), name="click-to-call: take requests")]

    async def stop(self, drain_s: float = 5.0) -> None:
        """Take no more requests; hang up the calls still placing or bridged after `drain_s`."""
        self.taking = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.calls:
            _, pending = await asyncio.wait(list(self.calls.values()), timeout=drain_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)

    async def _listen_forever(self) -> None:
        delay = 1.0
        while True:
            lost = asyncio.Event()
            try:
                conn = await db.connect(self.database_url)
            except Exception as exc:
                log.warning("click_to_call.not_listening", why=reason_of(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self.listening.set()
                self._wake.set()  # what came while nobody listened
                delay = 1.0
                await lost.wait()
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)
            await asyncio.sleep(delay)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        request_id, _, state = payload.partition(" ")
        if state == "pending":
            self._wake.set()
        elif state == "cancelled" and request_id.isdigit() and int(request_id) in self._cancel:
            self._cancel[int(request_id)].set()

    async def _work_forever(self) -> None:
        loop = asyncio.get_running_loop()
        renew_at = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):  # (not wait_for: 3.11's can swallow a cancel)
                async with asyncio.timeout(POLL_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if loop.time() >= renew_at:
                    renew_at = loop.time() + self.lease_s / 3
                    if self.calls:
                        await self.requests.renew(self.node, self.lease_s)
                    for lost in await self.requests.sweep(self.clock.now()):
                        log.warning("click_to_call.lost_request_closed", request_id=lost.id,
                                    outcome=lost.outcome, reason=lost.reason)
                        await self._tell(lost)
                await self._notice_cancels()
                while self.taking:
                    request = await self.requests.claim(self.node, self.clock.now(), self.lease_s)
                    if request is None:
                        break
                    self._start_call(request)
            except Exception as exc:  # PostgreSQL away: try again at the next poll
                log.warning("click_to_call.queue_unreadable", why=reason_of(exc))

    async def _notice_cancels(self) -> None:
        """Cancels whose NOTIFY was lost (the listener reconnecting): seen at the next poll."""
        if self._cancel:
            for request_id in await self.requests.cancelled_among(list(self._cancel)):
                if request_id in self._cancel:
                    self._cancel[request_id].set()

    def _start_call(self, request: CallRequest) -> None:
        self._cancel[request.id] = asyncio.Event()
        task = asyncio.create_task(self._run(request), name=f"click-to-call {request.id}")
        self.calls[request.id] = task

        def done(_task: asyncio.Task[str], request_id: int = request.id) -> None:
            self.calls.pop(request_id, None)
            self._cancel.pop(request_id, None)

        task.add_done_callback(done)

    async def _tell(self, request: CallRequest) -> None:
        if self.on_outcome is None or request.outcome is None:
            return
        try:
            await self.on_outcome(request.task_id, request.staff_id, request.call_record_id, request.outcome)
        except Exception:  # the call happened whatever the task model makes of it
            log.exception("click_to_call.outcome_not_recorded", request_id=request.id)

    # -- one call ---------------------------------------------------------------------------

    async def _run(self, request: CallRequest) -> str:
        bound = log.bind(request_id=request.id, task_id=request.task_id, staff_id=request.staff_id)
        call = _OutboundCall(self, request, bound)
        try:
            outcome, reason = await call.place()
        except asyncio.CancelledError:
            outcome, reason = "failed", "the service stopped during the call"
            await call.hang_up_all()
        except Exception as exc:
            bound.exception("click_to_call.failed")
            outcome, reason = "failed", f"the service failed: {reason_of(exc)}"
            await call.hang_up_all()
        await call.close(outcome)
        now = self.clock.now()
        try:
            if not await self.requests.finish(request.id, self.node, outcome=outcome, reason=reason, at=now,
                                              call_record_id=call.record_id):
                bound.warning("click_to_call.closed_elsewhere")
        except Exception as exc:
            bound.error("click_to_call.outcome_not_stored", outcome=outcome, why=reason_of(exc))
        bound.info("click_to_call.ended", outcome=outcome, reason=reason, record_id=call.record_id)
        finished = await self.requests.get(request.id)
        if finished is not None:
            await self._tell(finished)
        return outcome


class _OutboundCall:
    def __init__(self, c2c: ClickToCall, request: CallRequest, log_: Any):
        self.c2c = c2c
        self.request = request
        self.log = log_
        self.cancel = c2c._cancel[request.id]
        self.record_id: int | None = None
        self.call_id = f"click-to-call-{request.id}-{secrets.token_hex(4)}@{c2c.node}"
        self.staff_leg: Any = None
        self.resident_leg: Any = None
        self.recording: CallRecording | None = None
        self.claimed = False
        self.on_call = False
        self.end_reason: str | None = None  # 'media timeout' or 'max call length' (the watchdog's)
        self.refreshing: asyncio.Task[None] | None = None

    def now(self) -> Any:
        return self.c2c.clock.now()

    async def place(self) -> tuple[str, str]:
        c2c, request = self.c2c, self.request
        target = await task_target(c2c.pool, request.task_id)
        staff = await c2c.pool.fetchrow(
            "SELECT sip_uri, district_id, center_id, team_id FROM staff WHERE id = $1", request.staff_id)
        if target is None or target.number_encrypted is None:
            return "failed", f"task {request.task_id} has no number to call"
        if staff is None or not staff["sip_uri"]:
            return "staff_unreachable", "the staff member has no softphone"
        number = c2c.vault.decrypt(PHONE, target.number_encrypted)
        called = CallerNumber.of(c2c.vault, number)
        self.record_id = await c2c.records.open_outbound(
            self.call_id, called, self.now(), task_id=request.task_id, resident_id=target.resident_id,
            place=CallPlace(None, staff["district_id"], staff["center_id"], staff["team_id"]))
        self.log = self.log.bind(record_id=self.record_id, called=called.masked)
        await c2c.requests.record_opened(request.id, c2c.node, self.record_id)
        if self.cancel.is_set() or await c2c.requests.cancelled(request.id):
            return "cancelled", "cancelled before her phone rang"
        if not await c2c.presence.claim(request.staff_id, self.call_id,
                                        c2c.settings.staff_ring_s + CLAIM_MARGIN_S):
            return "staff_busy", "the staff member is ringing or on another call"
        self.claimed = True
        try:
            return await self._ring_both(staff["sip_uri"], number, called.masked)
        except _Cancelled as cancelled:
            await self.hang_up_all()
            return "cancelled", cancelled.reason

    async def _dial(self, seq: int, dialing: Awaitable[Dialed]) -> Dialed:
        """One dial, given up (CANCEL) when the request is cancelled or the staff member hangs up
        first; the attempt's outcome written either way."""
        c2c = self.c2c
        task = asyncio.ensure_future(dialing)
        watch = [asyncio.ensure_future(self.cancel.wait())]
        if self.staff_leg is not None:
            watch.append(asyncio.ensure_future(self.staff_leg.ended.wait()))
        try:
            await asyncio.wait([task, *watch], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in watch:
                w.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await c2c.records.dial_ended(self.record_id, seq, "cancelled", self.now())
            raise _Cancelled("cancelled before the resident answered" if self.cancel.is_set()
                             else "the staff member hung up before the resident answered")
        dialed = task.result()
        await c2c.records.dial_ended(self.record_id, seq, dialed.outcome.value, self.now())
        return dialed

    async def _ring_both(self, staff_uri: str, number: str, masked: str) -> tuple[str, str]:
        c2c, request, settings = self.c2c, self.request, self.c2c.settings
        assert self.record_id is not None
        seq = await c2c.records.dial_started(self.record_id, request.staff_id, staff_uri, self.now())
        dialed = await self._dial(seq, c2c.dial(staff_uri, settings.staff_ring_s, caller_display=STAFF_DISPLAY,
                                                      codecs=("PCMU", "PCMA")))
        if dialed.leg is None:
            return _STAFF_OUTCOME.get(dialed.outcome, "staff_no_answer"), f"her phone: {dialed.reason}"
        self.staff_leg = dialed.leg
        await c2c.records.answered(self.record_id, self.now())
        await self._keep_dialog(self.staff_leg)
        await c2c.presence.call_started(request.staff_id, self.call_id)
        self.on_call = True
        self.refreshing = asyncio.create_task(keep_on_call(c2c.presence, request.staff_id, self.call_id,
                                                           ON_CALL_TTL_S))
        self.log.info("click_to_call.staff_answered")
        # the resident: out through the PBX to the trunk, shown the hotline's number
        seq = await c2c.records.dial_started(self.record_id, None, f"tel:{masked}", self.now())
        ringing = asyncio.Event()
        ringback = asyncio.create_task(self._ringback(ringing))
        codecs = (self.staff_leg.codec, "PCMU" if self.staff_leg.codec == "PCMA" else "PCMA")
        try:
            dialed = await self._dial(seq, c2c.dial(
                f"sip:{number}@{settings.registrar_host}", settings.resident_ring_s,
                caller_display=settings.caller_id, codecs=codecs, on_ringing=ringing.set,
                asserted_identity=settings.caller_id))
        finally:
            ringback.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ringback
            if not self.staff_leg.ended.is_set():
                self.staff_leg.stop_playing()
        if dialed.leg is None:
            await self.hang_up_all()
            outcome = _RESIDENT_OUTCOME.get(dialed.outcome, "busy" if dialed.status == 603 else "unreachable")
            return outcome, f"the resident's phone: {dialed.reason}"
        self.resident_leg = dialed.leg
        if not await c2c.requests.connect(request.id, c2c.node, self.record_id):
            raise _Cancelled("cancelled as the resident answered")
        await c2c.records.outbound_connected(self.record_id, self.now(), request.staff_id)
        await self._keep_dialog(self.resident_leg)
        self.log.info("click_to_call.connected")
        await self._talk()
        return "answered", ""

    async def _ringback(self, ringing: asyncio.Event) -> None:
        """The staff member hears ringback (回铃音) while the resident's phone rings."""
        await ringing.wait()
        while await self.staff_leg.play(prompt("ringback")):
            pass

    async def _talk(self) -> None:
        """Bridge and record (resident left, what the resident heard right) until a hang-up."""
        c2c = self.c2c
        assert self.record_id is not None
        path = recording_path(c2c.settings.recordings_dir, self.now(), self.record_id, self.call_id)
        await c2c.records.recording_started(self.record_id, str(path))
        self.recording = CallRecording(self.resident_leg, path)
        side = self.recording.caller_side_from_bridge = []

        def keep_resident_side(from_resident: bytes, _from_staff: bytes, _codec: str) -> None:
            if from_resident:
                side.append(from_resident)

        watchdog = asyncio.create_task(self._watch())
        try:
            await bridge(self.resident_leg, self.staff_leg, on_audio=keep_resident_side)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _watch(self) -> None:
        """Hang up both when a leg sends no RTP for rtp_timeout_s (not while on hold: a held
        phone sends nothing by design), or the call reaches max_call_s."""
        settings = self.c2c.settings
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + settings.max_call_s
        legs = (self.resident_leg, self.staff_leg)
        while True:
            await asyncio.sleep(min(1.0, settings.rtp_timeout_s / 4))
            if any(not leg.on_hold and leg.silent_for() >= settings.rtp_timeout_s for leg in legs):
                self.end_reason = "media timeout"
            elif loop.time() >= ends_at:
                self.end_reason = "max call length"
            else:
                continue
            self.log.warning("click_to_call.dead_call", end_reason=self.end_reason)
            await self.hang_up_all()
            return

    async def _keep_dialog(self, leg: Any) -> None:
        """Stored (sealed) with the record so a node restarted after a crash can BYE the phone."""
        try:
            await self.c2c.records.dialog_established(self.record_id, leg.dialog_state().to_json())
        except Exception as exc:
            self.log.warning("click_to_call.dialog_not_stored", why=reason_of(exc))

    async def hang_up_all(self) -> None:
        for leg in (self.resident_leg, self.staff_leg):
            if leg is not None and not leg.ended.is_set():
                with contextlib.suppress(Exception):
                    await leg.hangup()

    async def close(self, outcome: str) -> None:
        """The recording and the record closed, her presence freed — whatever happened."""
        c2c, staff_id = self.c2c, self.request.staff_id
        await self.hang_up_all()
        if self.refreshing is not None:
            self.refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.refreshing
        try:
            if self.on_call:
                await c2c.presence.call_ended(staff_id, self.call_id)
            elif self.claimed:
                await c2c.presence.release(staff_id, self.call_id)
        except Exception as exc:  # Redis away: the state expires by itself
            self.log.warning("click_to_call.presence_not_cleared", why=reason_of(exc))
        if self.record_id is None:
            return
        if self.recording is not None:
            try:
                done = await self.recording.finish()
                await c2c.records.recorded(self.record_id, str(done.path), done.seconds, done.sha256)
            except Exception:
                self.log.exception("click_to_call.recording_not_finalized")
        try:
            await c2c.records.ended(self.record_id, self.now(), _DISPOSITION.get(outcome, "missed"),
                                    self.end_reason)
        except Exception:
            self.log.exception("click_to_call.record_not_closed")
