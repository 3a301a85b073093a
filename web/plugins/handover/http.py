"""交班 (the night handover): the duty doctor's notes, the sheets per team, the day team's 签收.

Thin handlers over handover/night_handover.py, where the rules are: which calls are hers to note,
which sheets a viewer may read (routing/scope.py `handover_sheets`), who may sign for an item.
A refusal of the service is answered by its code: not found (also out of scope) 404, a version
moved on or a note already written 409, bad input 422.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web

from handover.night_handover import URGENCIES, HandoverError, NightHandover, Sheet
from handover.tasks import TaskError
from web.app import console, int_param, json_response, problem, render, request_json, scope, viewer
from web.registry import NavItem, Plugin, path_param

PLUGIN = Plugin("handover", nav=(NavItem("/handover", "交班", "handover", order=15),),
                templates=str(Path(__file__).parent / "templates"))
SERVICE = "night_handover"
SOURCE_NAMES = {"note": "交班记录", "callback": "未接来电 / 回拨", "missed_call": "未接来电"}

_STATUS = {"not_found": 404, "no_shift": 404, "stale": 409, "closed": 409, "note_exists": 409}

_TIME = {"type": "string", "format": "date-time"}
_NULL_TIME = {"type": ["string", "null"], "format": "date-time"}
PENDING = {"type": "object", "required": ["calls"], "properties": {"calls": {"type": "array", "items": {
    "type": "object", "required": ["call_id", "offered_at", "connected_at", "caller_masked"],
    "properties": {"call_id": {"type": "integer"}, "offered_at": _TIME, "connected_at": _TIME,
                   "caller_masked": {"type": "string"},
                   "resident_masked": {"type": ["string", "null"]}}}}}}
NOTE_BODY = {"type": "object", "required": ["summary", "follow_up", "urgency"], "additionalProperties": False,
             "properties": {"summary": {"type": "string", "minLength": 1, "maxLength": 2000},
                            "follow_up": {"type": "boolean"},
                            "urgency": {"type": "string", "enum": list(URGENCIES)}}}
NOTE = {"type": "object", "required": ["id", "call_id", "written_at", "summary", "follow_up", "urgency"],
        "properties": {"id": {"type": "integer"}, "call_id": {"type": "integer"}, "written_at": _TIME,
                       "summary": {"type": "string"}, "follow_up": {"type": "boolean"},
                       "urgency": {"type": "string", "enum": list(URGENCIES)}}}
ITEM = {"type": "object",
        "required": ["id", "sheet_id", "source", "resident_masked", "caller_masked", "summary", "urgency", "voicemails",
                     "task_id", "task_version", "task_status", "owner", "due_at", "acknowledged_by",
                     "acknowledged_at", "can_acknowledge"],
        "properties": {
            "id": {"type": "integer"}, "sheet_id": {"type": "integer"}, "source": {"type": "string", "enum": list(SOURCE_NAMES)},
            "resident_masked": {"type": ["string", "null"]}, "caller_masked": {"type": "string"},
            "summary": {"type": "string"}, "urgency": {"type": "string", "enum": list(URGENCIES)},
            "voicemails": {"type": "integer"}, "task_id": {"type": ["integer", "null"]},
            "task_version": {"type": ["integer", "null"]},
            "task_status": {"type": ["string", "null"]}, "owner": {"type": ["string", "null"]},
            "due_at": _NULL_TIME, "acknowledged_by": {"type": ["string", "null"]},
            "acknowledged_at": _NULL_TIME, "can_acknowledge": {"type": "boolean"}}}
_SHEET_PROPS = {"id": {"type": "integer"}, "night": {"type": "string", "format": "date"},
                "team_id": {"type": ["integer", "null"]}, "team": {"type": ["string", "null"]},
                "center": {"type": ["string", "null"]}, "built_at": _TIME,
                "open_items": {"type": "integer"}}
SHEET = {"type": "object", "required": ["id", "night", "team", "built_at", "items", "open_items"],
         "properties": {**_SHEET_PROPS, "items": {"type": "array", "items": ITEM}}}
SHEETS = {"type": "object", "required": ["sheets"], "properties": {"sheets": {"type": "array", "items": {
    "type": "object", "required": ["id", "night", "team", "built_at", "item_count", "open_items"],
    "properties": {**_SHEET_PROPS, "item_count": {"type": "integer"}}}}}}
ACK_BODY = {"type": "object", "required": ["version"], "additionalProperties": False,
            "properties": {"version": {"type": "integer", "minimum": 1},
                           "late_reason": {"type": "string", "maxLength": 2000}}}


def service(request: web.Request) -> NightHandover:
    c = console(request)
    found = c.extras.get(SERVICE)
    if found is None:
        found = c.extras[SERVICE] = NightHandover(c.pool, tz=c.tz)
    return found


def refused(exc: TaskError) -> web.HTTPException:
    if exc.code == "not_found":
        return web.HTTPNotFound()   # the plain 404: out of scope answers as nothing there
    return problem(_STATUS.get(exc.code, 422), exc.code, exc.message)


def sheet_json(sheet: Sheet, *, items: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {"id": sheet.id, "night": sheet.night.isoformat(), "team_id": sheet.team_id,
                            "team": sheet.team, "center": sheet.center,
                            "built_at": sheet.built_at.isoformat(), "open_items": sheet.open_items}
    if items:
        data["items"] = [{k: v for k, v in asdict(i).items() if k not in ("resident_id", "call_id")}
                         for i in sheet.items]
    else:
        data["item_count"] = len(sheet.items)
    return data


async def pending_calls(request: web.Request) -> list[dict[str, Any]]:
    """Her answered night calls without a note (the desk shows them too)."""
    found = await service(request).pending(viewer(request).staff_id, now=console(request).now())
    return [{"call_id": p.call_id, "offered_at": p.offered_at, "connected_at": p.connected_at,
             "caller_masked": p.caller_masked, "resident_masked": p.resident_masked} for p in found]


async def _write_note(request: web.Request, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise problem(422, "invalid", "请求体必须是对象")
    try:
        note = await service(request).write_note(
            int_param(request, "call_id"), author_staff_id=viewer(request).staff_id,
            summary=body.get("summary"), follow_up=body.get("follow_up"), urgency=body.get("urgency"),
            now=console(request).now())
    except HandoverError as exc:
        raise refused(exc) from None
    return {"id": note.id, "call_id": note.call_id, "written_at": note.written_at, "summary": note.summary,
            "follow_up": note.follow_up, "urgency": note.urgency}


async def _acknowledge(request: web.Request, version: Any, late_reason: Any) -> Any:
    if late_reason is not None and not isinstance(late_reason, str):
        raise problem(422, "invalid", "超时原因必须是文字")
    try:
        return await service(request).acknowledge(
            int_param(request, "item_id"), scope=scope(request), version=version,
            late_reason=late_reason or None, now=console(request).now())
    except TaskError as exc:
        raise refused(exc) from None


async def _sheet(request: web.Request) -> Sheet:
    try:
        return await service(request).sheet(scope(request), int_param(request, "sheet_id"))
    except HandoverError as exc:
        raise refused(exc) from None


# -- the API ------------------------------------------------------------------------------------------

@PLUGIN.api("GET", "/api/v1/handover/notes/pending", capability="handover", response=PENDING,
            summary="my answered night-duty calls that have no handover note yet")
async def notes_pending(request: web.Request) -> web.StreamResponse:
    return json_response({"calls": await pending_calls(request)})


@PLUGIN.api("PUT", "/api/v1/handover/notes/{call_id}", capability="handover", writes=True,
            summary="write the handover note of a call I answered on night duty (once; 409 after)",
            request_body=NOTE_BODY, response=NOTE, parameters=[path_param("call_id")])
async def note_put(request: web.Request) -> web.StreamResponse:
    return json_response(await _write_note(request, await request_json(request)))


@PLUGIN.api("GET", "/api/v1/handover/sheets", capability="handover", response=SHEETS,
            summary="the handover sheets in my scope, newest night first")
async def sheets_list(request: web.Request) -> web.StreamResponse:
    found = await service(request).sheets(scope(request))
    return json_response({"sheets": [sheet_json(s, items=False) for s in found]})


@PLUGIN.api("GET", "/api/v1/handover/sheets/{sheet_id}", capability="handover", response=SHEET,
            summary="one handover sheet with its items and who signed for them (audited)",
            parameters=[path_param("sheet_id")])
async def sheet_get(request: web.Request) -> web.StreamResponse:
    return json_response(sheet_json(await _sheet(request)))


@PLUGIN.api("POST", "/api/v1/handover/items/{item_id}/acknowledge", capability="handover", writes=True,
            summary="签收: acknowledge an item of my team's sheet, with the task version I saw "
                    "(409 when it moved on; a late one states why)",
            request_body=ACK_BODY, response=ITEM, parameters=[path_param("item_id")])
async def item_acknowledge(request: web.Request) -> web.StreamResponse:
    body = await request_json(request)
    if not isinstance(body, dict):
        raise problem(422, "invalid", "请求体必须是对象")
    item = await _acknowledge(request, body.get("version"), body.get("late_reason"))
    return json_response({k: v for k, v in asdict(item).items() if k not in ("resident_id", "call_id")})


# -- the pages ----------------------------------------------------------------------------------------

@PLUGIN.page("GET", "/handover", capability="handover")
async def sheets_page(request: web.Request) -> web.StreamResponse:
    return render(request, "handover/sheets.html", sheets=await service(request).sheets(scope(request)),
                  pending=await pending_calls(request))


@PLUGIN.page("GET", "/handover/sheets/{sheet_id}", capability="handover")
async def sheet_page(request: web.Request) -> web.StreamResponse:
    return render(request, "handover/sheet.html", sheet=await _sheet(request), urgencies=URGENCIES,
                  sources=SOURCE_NAMES, now=console(request).now())


def _version(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else None


@PLUGIN.page("POST", "/handover/items/{item_id}/acknowledge", capability="handover", writes=True)
async def item_acknowledge_form(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    version, reason = form.get("version", ""), form.get("late_reason", "")
    item = await _acknowledge(request, _version(version) if isinstance(version, str) else None,
                              reason if isinstance(reason, str) else None)
    raise web.HTTPSeeOther(f"/handover/sheets/{item.sheet_id}#item-{item.id}")


@PLUGIN.page("POST", "/handover/notes/{call_id}", capability="handover", writes=True)
async def note_form(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    follow = form.get("follow_up")
    await _write_note(request, {"summary": form.get("summary"), "urgency": form.get("urgency"),
                                "follow_up": {"yes": True, "no": False}.get(follow) if isinstance(follow, str) else None})
    raise web.HTTPSeeOther("/desk#handover-notes")
