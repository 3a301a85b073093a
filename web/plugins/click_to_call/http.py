"""Click-to-call from the console: call a task's resident back on my own softphone (issue 11).

Thin handlers over recordings.call_requests: the request is written here and a service node
places the call (ivr/click_to_call.py). Only the signed-in staff member's own softphone is rung;
a task out of her scope, or a request that is not hers, answers 404.
"""

from __future__ import annotations

from aiohttp import web

from handover.tasks import TaskError, Tasks
from recordings.call_requests import (
    DEFAULT_PICKUP_S,
    OUTCOMES,
    AttemptTooSoon,
    CallRequest,
    CallRequestError,
    CallRequestNotFound,
    CallRequests,
)
from web.app import console, int_param, json_response, problem, scope, viewer
from web.registry import Plugin, path_param

PLUGIN = Plugin("click_to_call")

REQUEST = {"type": "object",
           "required": ["id", "task_id", "staff_id", "requested_at", "state", "outcome", "reason"],
           "properties": {
               "id": {"type": "integer"}, "task_id": {"type": "integer"}, "staff_id": {"type": "integer"},
               "requested_by": {"type": "string"},
               "requested_at": {"type": "string", "format": "date-time"},
               "state": {"type": "string", "enum": ["pending", "placing", "connected", "cancelled", "done"]},
               "node": {"type": ["string", "null"]},
               "call_record_id": {"type": ["integer", "null"]},
               "outcome": {"type": ["string", "null"], "enum": [*OUTCOMES, None]},
               "reason": {"type": "string"},
               "ended_at": {"type": ["string", "null"], "format": "date-time"}}}


async def _mine(request: web.Request) -> CallRequest:
    """The request named in the path, if it is the viewer's own (else 404: existence does not leak)."""
    found = await CallRequests(console(request).pool).get(int_param(request, "request_id"))
    if found is None or found.staff_id != viewer(request).staff_id:
        raise web.HTTPNotFound()
    return found


@PLUGIN.api("POST", "/api/v1/tasks/{task_id}/call", capability="tasks.call", writes=True,
            summary="call the task's resident back: my softphone rings first, then the resident",
            response=REQUEST, parameters=[path_param("task_id")])
async def call_task(request: web.Request) -> web.StreamResponse:
    c, me = console(request), viewer(request)
    task_id = int_param(request, "task_id")
    try:  # a task out of her scope is not found, like one that does not exist
        await Tasks(c.pool).get(task_id, scope(request))
    except TaskError:
        raise web.HTTPNotFound() from None
    try:
        made = await CallRequests(c.pool).request(task_id=task_id, staff_id=me.staff_id, requested_by=me.actor,
                                                  at=c.now(), pickup_s=DEFAULT_PICKUP_S)
    except CallRequestNotFound:
        raise web.HTTPNotFound() from None
    except AttemptTooSoon as exc:
        when = exc.next_at.astimezone(c.tz).strftime("%H:%M")
        raise problem(409, "too_soon", f"距上次尝试未满规定间隔，{when} 后可再次回拨") from None
    except CallRequestError as exc:
        raise problem(409, "call_refused", f"无法回拨：{exc}") from None
    return json_response(made.as_json())


@PLUGIN.api("GET", "/api/v1/call-requests/{request_id}", capability="tasks.call",
            summary="one of my click-to-call requests: its state and outcome", response=REQUEST,
            parameters=[path_param("request_id")])
async def call_request(request: web.Request) -> web.StreamResponse:
    return json_response((await _mine(request)).as_json())


@PLUGIN.api("POST", "/api/v1/call-requests/{request_id}/cancel", capability="tasks.call", writes=True,
            summary="stop my call before the resident answers (both phones are hung up)", response=REQUEST,
            parameters=[path_param("request_id")])
async def cancel_call(request: web.Request) -> web.StreamResponse:
    mine, c = await _mine(request), console(request)
    try:
        cancelled = await CallRequests(c.pool).cancel(mine.id, by=viewer(request).actor, at=c.now())
    except CallRequestError as exc:
        raise problem(409, "too_late", f"无法取消：{exc}") from None
    return json_response(cancelled.as_json())
