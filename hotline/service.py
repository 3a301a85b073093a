"""The running hotline: the SIP agent, one call flow per incoming call, until told to stop.

Start: check the schema, close what a previous run left open (recordings repaired, callbacks
owed to callers who were waiting, its staff freed in presence; each call on its own, never
blocking the start), bind the SIP port and register, and send BYE to every phone the previous run
left in a call (from the dialog states stored in its records). A registrar that is away is
not fatal: the agent keeps retrying (telephony.sip_ua) and calls flow once it answers.
While PostgreSQL is away calls go on: their steps are spooled to the node's journal
(DATA_DIR/journal) and a replayer task writes them to PostgreSQL once it is back, with backoff
(recordings.call_log). At start-up the journal a previous run left is replayed before recovery,
so recovery sees the calls it holds.
Stop (SIGINT/SIGTERM, `wind_down`): unregister so the PBX sends new calls to another node (an
INVITE that still arrives gets 503), let the calls in progress end by themselves for up to
drain_s — a resident talking to a doctor is not cut off by a deploy — then hang up whatever is
left (a second signal does that at once) and finish their records and recordings.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import structlog

from handover.callbacks import Callbacks
from handover.tasks import Tasks
from handover.watcher import Watcher
from hotline.clock import Clock
from hotline.runtime import Runtime, checked_pool
from ivr.click_to_call import ClickToCall, ClickToCallSettings
from ivr.flow import CallFlow, FlowSettings
from ivr.prompt_overrides import LivePrompts
from ivr.queue import CallQueue
from recordings.call_log import CallLog, Replayer
from recordings.call_records import CallRecords
from recordings.call_requests import CallRequests
from recordings.journal import Journal
from recordings.live import SEND_TIMEOUT_S, LiveCalls
from routing.calendar_store import calendar_loader
from routing.directory import Directory
from routing.presence import Presence, presence_client
from routing.registrations import RegistrationListener
from routing.snapshot import RoutingCache
from store import embedded
from store.private import private_dir
from telephony.agent import SipAccount, SipAgent

log = structlog.get_logger("hotline.service")

# Database connections: a few per concurrent call step, far fewer than calls (steps are short).
POOL_SIZE = 10
# How long a stopping service gives its calls to wrap up (records, recordings) before cancelling.
DRAIN_S = 5.0
# How long a stopping service tries to write the journal to PostgreSQL (what is left stays in
# the journal for the next start).
FINAL_REPLAY_S = 10.0


def sip_account(rt: Runtime) -> SipAccount:
    config = rt.config
    host, port = config.registrar
    return SipAccount(host, port, config.sip_user, config.sip_password, local_ip=config.sip_local_ip,
                      sip_port=config.sip_port, rtp_port_low=config.rtp_port_low,
                      rtp_port_high=config.rtp_port_high, trusted=config.trusted_addresses,
                      untrusted_action=config.sip_untrusted, max_calls=config.max_calls)


@dataclass
class RunningService:
    agent: SipAgent
    flow: CallFlow
    clock: Clock
    calls: set[asyncio.Task[str]]
    registrations: RegistrationListener | None = None
    winding_down: bool = False
    replayer: Replayer | None = None
    watcher: Watcher | None = None
    pool: asyncpg.Pool | None = None   # shared with the console served beside SIP
    redis_url: str = ""
    click_to_call: ClickToCall | None = None  # calls placed for staff (issue 11)

    async def serve_forever(self) -> None:
        while True:
            leg = await self.agent.next_call()
            if self.winding_down:
                work = self.flow.turn_away(leg, "this hotline node is shutting down")
            else:
                work = self.flow.handle(leg)
            task = asyncio.create_task(work, name=f"call {leg.call_id}")
            self.calls.add(task)
            task.add_done_callback(self.calls.discard)

    async def wind_down(self, within_s: float, cut: asyncio.Event) -> int:
        """Take no new calls and wait for the calls in progress to end by themselves, for at most
        `within_s` or until `cut` is set; returns how many are still going (drain hangs them up)."""
        self.winding_down = True
        if self.click_to_call is not None:
            self.click_to_call.taking = False  # another node takes the new requests
        unregistered = await self.agent.withdraw()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        log.info("service.winding_down", calls=len(self.calls), within_s=within_s, unregistered=unregistered)
        cut_waiter = asyncio.create_task(cut.wait())
        try:
            while self.calls and not cut.is_set() and loop.time() < deadline:
                await asyncio.wait([*self.calls, cut_waiter], timeout=deadline - loop.time(),
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut_waiter.cancel()
        left = len(self.calls)
        log.info("service.wound_down", calls_left=left, cut=cut.is_set())
        return left

    async def drain(self) -> None:
        """Hang up every call in progress and let its flow write the ending."""
        if not self.calls:
            return
        log.info("service.hanging_up_calls", count=len(self.calls))
        for task in list(self.calls):
            task.cancel()
        await asyncio.wait(list(self.calls), timeout=DRAIN_S)


@asynccontextmanager
async def running(rt: Runtime) -> AsyncIterator[RunningService]:
    config = rt.config
    clock = Clock(config.clock_start_at)
    # Recordings and voicemails are consultations: the service's user only, whatever the umask.
    private_dir(config.data_dir)
    private_dir(config.recordings_path)
    if clock.shifted:
        log.warning("clock.shifted", starts_at=config.clock_start, why="clock_start is set")
    async with checked_pool(rt.database_url, max_size=POOL_SIZE) as pool:
        agent = SipAgent(sip_account(rt))
        routing = RoutingCache(pool, rt.database_url, calendar_loader(config.tz, config.day_start, config.day_end),
                               config.step_ring_timeouts, config.tz)
        await routing.start()
        # A district's own recordings of the prompts (set in the console), on every node.
        live_prompts = LivePrompts(pool, rt.database_url)
        await live_prompts.start()
        # Presence and the queue live in Redis, shared by every node; without Redis the service
        # still takes calls (presence.py degrades to "everyone ringable", the queue to this node).
        redis_url = config.redis_url or embedded.ensure_redis(config.data_dir)
        redis = presence_client(redis_url)
        presence = Presence(redis, tz=config.tz, now=clock.now)
        # The live board's feed: its own client (its writes are batched, off the call's path, and
        # may take longer than a presence read); like presence, it carries on without Redis.
        live_redis = presence_client(redis_url, timeout_s=SEND_TIMEOUT_S)
        live = LiveCalls(live_redis, node=config.node, now=clock.now)
        records, callbacks = CallRecords(pool, rt.vault, config.node), Callbacks(pool)
        journal = Journal(config.data_dir / "journal")
        call_log = CallLog(records, callbacks, journal)
        replayer = Replayer(call_log, pool)
        flow = CallFlow(
            records=records, callbacks=callbacks, call_log=call_log,
            directory=Directory(pool, rt.vault, area_code=config.area_code), routing=routing.data,
            vault=rt.vault, clock=clock,
            dial=agent.dial, presence=presence, queue=CallQueue(redis), live=live,
            settings=FlowSettings(recordings_dir=config.recordings_path, tz=config.tz,
                                  menu_timeout_s=config.menu_timeout_s, queue_wait_s=config.queue_wait_s,
                                  queue_announce_every_s=config.queue_announce_every_s,
                                  voicemail_max_s=config.voicemail_max_s,
                                  rtp_timeout_s=config.rtp_timeout_s, max_call_s=config.max_call_s))
        try:  # what a previous run journaled, before recovery looks for unfinished calls
            replayed = await replayer.drain()
            if replayed.applied or replayed.rejected:
                log.warning("journal.replayed_at_start", applied=replayed.applied, rejected=replayed.rejected,
                            segments=replayed.segments)
        except Exception as exc:  # the replayer task tries again
            log.error("journal.not_replayed_at_start", why=str(exc))
        await flow.recover()
        today = clock.now().astimezone(config.tz).date()
        missing = (await routing.data(clock.now())).calendar.missing_years(today, today + timedelta(days=60))
        if missing:
            log.warning("calendar.missing_years", years=list(missing),
                        why="public holidays unknown: those days are treated as ordinary weeks; "
                            "`hotline calendar import` the State Council's notice")
        await agent.start()
        # The phones of calls the previous run lost are still in them: BYE each (retransmitted
        # until answered), now that the SIP socket is ours again.
        for lost in flow.take_lost_dialogs():
            agent.send_bye(lost)
        # A phone that registers with the PBX is ringable again at once (the PBX writes its
        # registrations to this database; routing/registrations.py); without that, a phone a
        # failed dial marked offline stays skipped until the mark expires.
        registrations = RegistrationListener(pool, rt.database_url, presence)
        await registrations.start()
        # Calls staff ask for (console, `hotline tasks call`): one node takes each request; what
        # each came to goes into its task's history (an unanswered one is a counted attempt).
        tasks = Tasks(pool)

        async def task_call_outcome(task_id: int, staff_id: int, call_record_id: int | None,
                                    outcome: str) -> None:
            await tasks.record_call(task_id, outcome=outcome, staff_id=staff_id,
                                    call_record_id=call_record_id, at=clock.now())

        click_to_call = ClickToCall(
            requests=CallRequests(pool), records=records, pool=pool, database_url=rt.database_url,
            vault=rt.vault, clock=clock, dial=agent.dial, node=config.node, presence=presence,
            on_outcome=task_call_outcome, settings=ClickToCallSettings(recordings_dir=config.recordings_path, registrar_host=config.registrar[0],
                                         caller_id=config.callback_caller_id,
                                         staff_ring_s=config.click_to_call_staff_ring_s,
                                         resident_ring_s=config.click_to_call_ring_s,
                                         rtp_timeout_s=config.rtp_timeout_s, max_call_s=config.max_call_s))
        await click_to_call.start()
        # The deadline watcher runs on every node; the one holding its lock acts (same clock as
        # the calls, so a moved clock moves the deadlines too).
        watcher = Watcher(pool, rt.database_url, now=clock.now, routing=routing.data, tz=config.tz,
                          sweep_s=config.watch_sweep_s, poll_s=config.watch_poll_s, node=config.node)
        watcher.start()
        service = RunningService(agent, flow, clock, set(), registrations, replayer=replayer,
                                 pool=pool, redis_url=redis_url, click_to_call=click_to_call,
                                 watcher=watcher)
        serving = asyncio.create_task(service.serve_forever(), name="take calls")
        replaying = asyncio.create_task(replayer.run(), name="replay the call journal")
        log.info("service.started", sip=f"sip:{config.sip_user}@{config.sip_registrar}",
                 local=f"{config.sip_local_ip}:{config.sip_port}", registered=agent.registered)
        try:
            yield service
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            await service.drain()
            await click_to_call.stop(DRAIN_S)
            replaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replaying
            await journal.close()
            if journal.holds_events():
                try:
                    await asyncio.wait_for(replayer.drain(), FINAL_REPLAY_S)
                except Exception as exc:
                    log.warning("journal.left_for_next_start", why=str(exc) or type(exc).__name__,
                                path=str(journal.directory))
            await watcher.stop()
            await agent.stop()
            await registrations.stop()
            await live_prompts.stop()
            await routing.stop()
            await live.flush(1.0)  # the last calls' `ended` (recovery, drain)
            await live.aclose()
            await live_redis.aclose()
            await redis.aclose()
            log.info("service.stopped")
