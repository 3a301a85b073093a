"""工作台 (my desk): my open callbacks with their clocks, voicemails, and my presence."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from aiohttp import web

from handover.desk import escalated_tasks, open_tasks
from routing.presence import CONSOLE_KINDS, Kind
from web.app import (
    console,
    int_param,
    json_response,
    problem,
    render,
    request_json,
    scope,
    viewer,
)
from web.media import stream_audio
from web.plugins.handover.http import pending_calls
from web.registry import NavItem, Plugin, path_param

PLUGIN = Plugin("desk", nav=(NavItem("/desk", "工作台", "desk", order=10),),
                templates=str(Path(__file__).parent / "templates"))

PRESENCE_NAMES = {"available": "在线", "dnd": "勿扰", "offline": "离线", "on_call": "通话中",
                  "ringing": "振铃中", "unknown": "未知（Redis 不可用）"}

_CALL = {"type": "object", "required": ["call_id", "offered_at"], "properties": {
    "call_id": {"type": "integer"}, "offered_at": {"type": "string", "format": "date-time"},
    "line": {"type": ["string", "null"]}, "disposition": {"type": "string"}}}
_VOICEMAIL = {"type": "object", "required": ["id", "seconds", "recorded_at", "audio_url"], "properties": {
    "id": {"type": "integer"}, "seconds": {"type": "number"},
    "recorded_at": {"type": "string", "format": "date-time"}, "audio_url": {"type": "string"}}}
TASK = {"type": "object",
        "required": ["id", "kind", "kind_title", "caller_masked", "opened_at", "due_at", "seconds_left", "urgency",
                     "calls", "voicemails"],
        "properties": {
            "id": {"type": "integer"},
            "kind": {"type": "string"},
            "kind_title": {"type": "string"},
            "caller_masked": {"type": "string"},
            "resident_id": {"type": ["integer", "null"]},
            "resident_name": {"type": ["string", "null"]},
            "owner_staff_id": {"type": ["integer", "null"]},
            "opened_at": {"type": "string", "format": "date-time"},
            "due_at": {"type": "string", "format": "date-time"},
            "seconds_left": {"type": "number"},
            "urgency": {"type": "string", "enum": ["ok", "amber", "red", "overdue"]},
            "calls": {"type": "array", "items": _CALL},
            "voicemails": {"type": "array", "items": _VOICEMAIL},
        }}
PRESENCE = {"type": "object", "required": ["state", "label"], "properties": {
    "state": {"type": "string", "enum": list(PRESENCE_NAMES)},
    "label": {"type": "string"},
    "since": {"type": ["string", "null"], "format": "date-time"}}}


def task_json(task: Any) -> dict[str, Any]:
    data = dataclasses.asdict(task)
    for vm in data.get("voicemails", []):
        vm["audio_url"] = f"/api/v1/voicemails/{vm['id']}/audio"
    return data


async def _my_tasks(request: web.Request) -> list[dict[str, Any]]:
    c = console(request)
    return [task_json(t) for t in await open_tasks(c.pool, scope(request), now=c.now())]


async def _my_presence(request: web.Request) -> dict[str, Any]:
    state = await console(request).presence.state(viewer(request).staff_id)
    return {"state": state.kind.value, "label": PRESENCE_NAMES[state.kind.value],
            "since": state.since.isoformat() if state.since else None}


@PLUGIN.page("GET", "/desk", capability="desk")
async def desk_page(request: web.Request) -> web.StreamResponse:
    can_presence = scope(request).can("presence")
    # the duty doctor's night calls still asking for a note (the section is hers; others see it
    # only when they have answered a call on night duty)
    pending = await pending_calls(request) if scope(request).can("handover") else []
    return render(request, "desk/desk.html", tasks=await _my_tasks(request),
                  handover_pending=pending if pending or viewer(request).role == "night_doctor" else None,
                  escalated=await escalated_tasks(console(request).pool, scope(request)),
                  presence=await _my_presence(request) if can_presence else None,
                  presence_names={k: PRESENCE_NAMES[k.value] for k in
                                  (Kind.AVAILABLE, Kind.DND, Kind.OFFLINE)})


@PLUGIN.api("GET", "/api/v1/desk/tasks", capability="desk", summary="my open callback tasks, due soonest first",
            response={"type": "object", "required": ["tasks"],
                      "properties": {"tasks": {"type": "array", "items": TASK}}})
async def desk_tasks(request: web.Request) -> web.StreamResponse:
    return json_response({"tasks": await _my_tasks(request)})


@PLUGIN.api("GET", "/api/v1/presence", capability="presence", summary="my presence", response=PRESENCE)
async def presence_get(request: web.Request) -> web.StreamResponse:
    return json_response(await _my_presence(request))


@PLUGIN.api("PUT", "/api/v1/presence", capability="presence", writes=True,
            summary="set my presence: available (在线), dnd (勿扰) or offline (离线)", response=PRESENCE,
            request_body={"type": "object", "required": ["state"], "additionalProperties": False,
                          "properties": {"state": {"type": "string",
                                                   "enum": ["available", "dnd", "offline"]}}})
async def presence_set(request: web.Request) -> web.StreamResponse:
    body = await request_json(request)
    state = body.get("state") if isinstance(body, dict) else None
    if state not in {k.value for k in CONSOLE_KINDS}:
        raise problem(422, "invalid_state", "状态只能是 在线、勿扰 或 离线")
    written = await console(request).presence.set_state(viewer(request).staff_id, state)
    if not written:
        raise problem(503, "presence_unavailable", "状态暂时无法保存（Redis 不可用）")
    return json_response(await _my_presence(request))


@PLUGIN.api("GET", "/api/v1/voicemails/{voicemail_id}/audio", capability="recordings",
            summary="a voicemail's audio (WAV), with HTTP Range; audited", content_type="audio/wav",
            response={"type": "string", "contentMediaType": "audio/wav"},
            parameters=[path_param("voicemail_id")])
async def voicemail_audio(request: web.Request) -> web.StreamResponse:
    from recordings.call_search import CallSearch

    voicemail_id = int_param(request, "voicemail_id")
    c = console(request)
    found = await CallSearch(c.pool, c.vault).voicemail(scope(request), voicemail_id)
    if found is None:
        raise web.HTTPNotFound()
    return await stream_audio(request, found.path, subject=f"voicemail:{voicemail_id}",
                              action="voicemail.played", download_name=f"voicemail-{voicemail_id}.wav")

