"""Click-to-call requests: a durable queue between whoever asks for a call and the node placing it.

The console and `hotline tasks call` run in processes of their own; only a service node holds a
SIP agent. A request is a row of click_to_call_requests (migration 0025): written `pending`,
announced with NOTIFY 'click_to_call', claimed by exactly one node (`FOR UPDATE SKIP LOCKED`),
worked under a lease the node renews, and closed with its outcome. Its states and what happens
to a request a dead node held are described in the migration; in short:

- a pending request no node takes within `pickup_s` is closed 'failed' (never placed late);
- cancelling a pending request closes it at once; a placing one is marked 'cancelled' and the
  node hangs up both legs; a connected (bridged) or finished one can no longer be cancelled;
- a request whose node let its lease lapse is closed by any node's sweep ('answered' when the
  resident had answered, 'failed' otherwise) and is never placed a second time.

Lease and pickup deadlines are judged by the database's clock (one clock for every node);
requested_at and ended_at are the service's clock (HOTLINE_CLOCK_START in tests and demos), like
the call records they sit beside.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

CHANNEL = "click_to_call"
OUTCOMES = ("answered", "no_answer", "busy", "unreachable", "staff_no_answer", "staff_busy",
            "staff_unreachable", "cancelled", "failed")
# The resident's side did not pick up: an attempt of the task that counts (issue 11: the next
# attempt waits, after enough of them the task may close as unreachable).
UNANSWERED_ATTEMPTS = ("no_answer", "busy", "unreachable")
# The node holding a request renews its lease this often (a third of the lease: one lost
# renewal is harmless).
LEASE_S = 15.0
REASON_MAX = 500
# How long a request waits for a node by default (HOTLINE_CLICK_TO_CALL_PICKUP_S for the CLI).
DEFAULT_PICKUP_S = 30.0

# The task a request works and the number to call: the task's own (the caller's, for a callback),
# else the resident's first phone (a task opened without a call, e.g. a referral's follow-up).
# The task (handover's tasks, migration 0024) as a call needs it: the number to dial (its own, or
# its resident's first phone) and when its kind allows the next attempt (handover.tasks).
_TASK_SQL = """SELECT t.id, t.status, t.resident_id, t.last_attempt_at + k.retry_after AS next_attempt_at,
                      COALESCE(t.caller_number_enc, p.phone_enc) AS caller_number_enc,
                      COALESCE(CASE WHEN t.caller_number_enc IS NOT NULL THEN t.caller_number_masked END,
                               p.phone_masked, '') AS caller_number_masked
               FROM tasks t JOIN task_kinds k ON k.kind = t.kind
               LEFT JOIN LATERAL (SELECT phone_enc, phone_masked FROM resident_phones
                                  WHERE resident_id = t.resident_id ORDER BY position LIMIT 1) p ON true
               WHERE t.id = $1"""

# A request nobody will finish (its node died): the resident had answered, or it came to nothing.
_LOST = """outcome = CASE WHEN state = 'connected' THEN 'answered'
                          WHEN state = 'cancelled' THEN 'cancelled' ELSE 'failed' END,
           state = CASE WHEN state = 'cancelled' THEN 'cancelled' ELSE 'done' END"""
_COLUMNS = """id, task_id, staff_id, requested_by, requested_at, state, claimed_by_node, claimed_at,
              call_record_id, outcome, reason, cancelled_at, cancelled_by, ended_at"""


class CallRequestError(Exception):
    """A request refused (bad input, a task that is closed, too late to cancel); nothing was written."""


class AttemptTooSoon(CallRequestError):
    """The task's kind spaces its attempts (task_kinds.retry_after): the next from `next_at`."""

    def __init__(self, task_id: int, next_at: datetime):
        super().__init__(f"task {task_id}: the next attempt is allowed from {next_at.isoformat()}")
        self.next_at = next_at


class CallRequestNotFound(CallRequestError):
    """No such request, task or staff member."""


@dataclass(frozen=True)
class CallRequest:
    id: int
    task_id: int
    staff_id: int
    requested_by: str
    requested_at: datetime
    state: str
    claimed_by_node: str | None
    claimed_at: datetime | None
    call_record_id: int | None
    outcome: str | None
    reason: str
    cancelled_at: datetime | None
    cancelled_by: str | None
    ended_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "task_id": self.task_id, "staff_id": self.staff_id,
                "requested_by": self.requested_by, "requested_at": self.requested_at.isoformat(),
                "state": self.state, "node": self.claimed_by_node, "call_record_id": self.call_record_id,
                "outcome": self.outcome, "reason": self.reason,
                "ended_at": self.ended_at.isoformat() if self.ended_at else None}


@dataclass(frozen=True)
class TaskTarget:
    """Whom a task's call goes to: the number (sealed) and the resident, if known."""

    task_id: int
    resident_id: int | None
    number_encrypted: bytes | None
    number_masked: str


def _request(row: asyncpg.Record | None) -> CallRequest | None:
    return None if row is None else CallRequest(**dict(row))


def _reason(text: str) -> str:
    return text[:REASON_MAX]


async def task_target(conn: asyncpg.Pool | asyncpg.Connection, task_id: int) -> TaskTarget | None:
    row = await conn.fetchrow(_TASK_SQL, task_id)
    if row is None:
        return None
    return TaskTarget(row["id"], row["resident_id"], row["caller_number_enc"], row["caller_number_masked"])


class CallRequests:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    # -- the requester's side ---------------------------------------------------------------

    async def request(self, *, task_id: int, staff_id: int, requested_by: str, at: datetime,
                      pickup_s: float) -> CallRequest:
        """A new pending request, announced to every node. Refused (CallRequestError) for a
        task that is not open or has no number, a staff member without a softphone or who has
        left, or a task with a call already under way; CallRequestNotFound for an unknown
        task or staff member."""
        if not requested_by or len(requested_by) > 200:
            raise CallRequestError("requested_by must be 1 to 200 characters")
        if not 0 < pickup_s <= 3600:
            raise CallRequestError("pickup_s must be between 0 and 3600 seconds")
        async with self._pool.acquire() as conn, conn.transaction():
            task = await conn.fetchrow(_TASK_SQL + " FOR UPDATE OF t", task_id)
            if task is None:
                raise CallRequestNotFound(f"task {task_id} does not exist")
            if task["status"] != "open":
                raise CallRequestError(f"task {task_id} is {task['status']}, not open")
            if task["caller_number_enc"] is None:
                raise CallRequestError(f"task {task_id} has no number to call")
            if task["next_attempt_at"] is not None and at < task["next_attempt_at"]:
                raise AttemptTooSoon(task_id, task["next_attempt_at"])
            staff = await conn.fetchrow(
                "SELECT sip_uri, left_on IS NOT NULL AND left_on <= $2::date AS gone FROM staff WHERE id = $1",
                staff_id, at.date())
            if staff is None:
                raise CallRequestNotFound(f"staff member {staff_id} does not exist")
            if staff["gone"]:
                raise CallRequestError(f"staff member {staff_id} has left")
            if not staff["sip_uri"]:
                raise CallRequestError(f"staff member {staff_id} has no softphone (SIP address)")
            busy = await conn.fetchval(
                "SELECT id FROM click_to_call_requests WHERE task_id = $1 AND ended_at IS NULL"
                " LIMIT 1", task_id)
            if busy is not None:
                raise CallRequestError(f"task {task_id} already has a call under way (request {busy})")
            row = await conn.fetchrow(
                f"""INSERT INTO click_to_call_requests (task_id, staff_id, requested_by, requested_at, pickup_by)
                    VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
                    RETURNING {_COLUMNS}""",  # noqa: S608 - constant columns
                task_id, staff_id, requested_by, at, pickup_s)
        request = _request(row)
        assert request is not None
        return request

    async def get(self, request_id: int) -> CallRequest | None:
        return _request(await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM click_to_call_requests WHERE id = $1", request_id))  # noqa: S608

    async def cancel(self, request_id: int, *, by: str, at: datetime) -> CallRequest:
        """Stop a call before the resident answers: a pending request is closed at once, a
        placing one is marked and its node hangs up both legs. Cancelling twice is harmless.
        CallRequestError once the resident has answered or the request has finished."""
        row = await self._pool.fetchrow(
            f"""UPDATE click_to_call_requests
                   SET state = 'cancelled', cancelled_at = $2, cancelled_by = $3,
                       outcome = CASE WHEN state = 'pending' THEN 'cancelled' END,
                       ended_at = CASE WHEN state = 'pending' THEN $2::timestamptz END,
                       reason = CASE WHEN state = 'pending' THEN 'cancelled before a node took it'
                                     ELSE reason END
                 WHERE id = $1 AND state IN ('pending', 'placing')
             RETURNING {_COLUMNS}""", request_id, at, by[:200])  # noqa: S608
        if row is not None:
            request = _request(row)
            assert request is not None
            return request
        request = await self.get(request_id)
        if request is None:
            raise CallRequestNotFound(f"call request {request_id} does not exist")
        if request.state == "cancelled":
            return request
        if request.state == "connected":
            raise CallRequestError(f"call request {request_id}: the resident has answered; "
                                   "the call ends when a phone hangs up")
        raise CallRequestError(f"call request {request_id} has finished ({request.outcome})")

    async def wait(self, request_id: int, timeout_s: float) -> CallRequest:
        """Until the request has its outcome or the resident has answered (connected), or
        `timeout_s` (then as it is): woken by the table's NOTIFY, and looked at once a second
        besides in case a notification was lost."""
        woken = asyncio.Event()

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            if payload.split(" ", 1)[0] == str(request_id):
                woken.set()

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with self._pool.acquire() as conn:
            await conn.add_listener(CHANNEL, on_notify)
            try:
                while True:
                    request = await self.get(request_id)
                    if request is None:
                        raise CallRequestNotFound(f"call request {request_id} does not exist")
                    left = deadline - loop.time()
                    if request.finished or request.state == "connected" or left <= 0:
                        return request
                    woken.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(woken.wait(), min(left, 1.0))
            finally:
                await conn.remove_listener(CHANNEL, on_notify)

    # -- the node's side ----------------------------------------------------------------------

    async def claim(self, node: str, at: datetime, lease_s: float = LEASE_S) -> CallRequest | None:
        """The oldest pending request still within its pickup time, now this node's; None when
        there is none. Two nodes claiming at once never get the same one (SKIP LOCKED)."""
        return _request(await self._pool.fetchrow(
            f"""UPDATE click_to_call_requests
                   SET state = 'placing', claimed_by_node = $1, claimed_at = $2,
                       lease_until = now() + make_interval(secs => $3)
                 WHERE id = (SELECT id FROM click_to_call_requests
                              WHERE state = 'pending' AND pickup_by > now()
                              ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
             RETURNING {_COLUMNS}""", node, at, lease_s))  # noqa: S608

    async def renew(self, node: str, lease_s: float = LEASE_S) -> int:
        """Extend the lease of every request this node is working; how many."""
        result = await self._pool.execute(
            "UPDATE click_to_call_requests SET lease_until = now() + make_interval(secs => $2)"
            " WHERE claimed_by_node = $1 AND ended_at IS NULL AND state <> 'pending'", node, lease_s)
        return int(result.split()[-1])

    async def record_opened(self, request_id: int, node: str, call_record_id: int) -> None:
        """The call's record exists (written before any phone rings): the request names it."""
        await self._pool.execute(
            "UPDATE click_to_call_requests SET call_record_id = $3 WHERE id = $1 AND claimed_by_node = $2",
            request_id, node, call_record_id)

    async def connect(self, request_id: int, node: str, call_record_id: int) -> bool:
        """The resident answered: the request is connected, unless it was cancelled first
        (False: hang up both). Exactly one of connect and cancel wins."""
        return await self._pool.fetchval(
            "UPDATE click_to_call_requests SET state = 'connected', call_record_id = $3"
            " WHERE id = $1 AND claimed_by_node = $2 AND state = 'placing' RETURNING true",
            request_id, node, call_record_id) is True

    async def cancelled_among(self, request_ids: list[int]) -> list[int]:
        """Which of these requests have been asked to stop."""
        return [r["id"] for r in await self._pool.fetch(
            "SELECT id FROM click_to_call_requests WHERE id = ANY($1::bigint[]) AND state = 'cancelled'",
            request_ids)]

    async def cancelled(self, request_id: int) -> bool:
        return await self._pool.fetchval(
            "SELECT state = 'cancelled' FROM click_to_call_requests WHERE id = $1", request_id) is True

    async def finish(self, request_id: int, node: str, *, outcome: str, reason: str, at: datetime,
                     call_record_id: int | None) -> bool:
        """Close a request this node worked with its outcome; False if it was closed already
        (its lease lapsed and another node's sweep closed it)."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        return await self._pool.fetchval(
            """UPDATE click_to_call_requests
                  SET state = CASE WHEN state = 'cancelled' THEN 'cancelled' ELSE 'done' END,
                      outcome = $3, reason = $4, ended_at = $5,
                      call_record_id = COALESCE($6, call_record_id)
                WHERE id = $1 AND claimed_by_node = $2 AND ended_at IS NULL RETURNING true""",
            request_id, node, outcome, _reason(reason), at, call_record_id) is True

    async def sweep(self, at: datetime) -> list[CallRequest]:
        """Close what nobody will finish: pending requests past their pickup time, and requests
        whose node let its lease lapse (it died). Any node may run it; each row is closed once."""
        rows = await self._pool.fetch(
            f"""UPDATE click_to_call_requests
                   SET {_LOST}, ended_at = $1,
                       reason = CASE WHEN state = 'pending' THEN 'no service node took the request in time'
                                     ELSE 'node ' || claimed_by_node || ' stopped working it (lease lapsed)' END
                 WHERE ended_at IS NULL
                   AND (state = 'pending' AND pickup_by <= now()
                        OR state <> 'pending' AND lease_until <= now())
             RETURNING {_COLUMNS}""", at)  # noqa: S608
        return [r for r in map(_request, rows) if r is not None]

    async def close_own(self, node: str, at: datetime) -> list[CallRequest]:
        """At start-up: the requests a previous run of this node held (it died with their
        calls) are closed as the sweep would, without waiting for their leases to lapse."""
        rows = await self._pool.fetch(
            f"""UPDATE click_to_call_requests
                   SET {_LOST}, ended_at = $2, reason = 'the node restarted during the call'
                 WHERE claimed_by_node = $1 AND ended_at IS NULL AND state <> 'pending'
             RETURNING {_COLUMNS}""", node, at)  # noqa: S608
        return [r for r in map(_request, rows) if r is not None]
