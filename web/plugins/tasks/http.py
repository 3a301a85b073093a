"""任务 (a task): its page, reached from 工作台, and the JSON API under /api/v1/tasks.

Thin over handover/: the rules (evidence, attempts, late reasons, versions, scope) are
handover.tasks.Tasks'; what a page shows is handover.task_view's. A refusal is the TaskError's
message: 404 for a task not in scope (as for one that does not exist), 409 for a version another
person changed first or a task already closed, 422 for what the form must say differently.

Every form carries the version of the task it showed. The supervisor, read-only everywhere else,
may reassign (routing.scope.READ_ONLY_WRITES); every reassignment is written to the audit log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from handover.task_view import (
    ATTEMPT_NAMES,
    EVENT_NAMES,
    OUTCOME_NAMES,
    REASON_NAMES,
    STATUS_NAMES,
    TaskFilter,
    history_json,
    list_tasks,
    task_view,
)
from handover.tasks import STATUSES, TaskError, Tasks
from store.audit import record_read, subject
from web.app import console, int_param, json_response, problem, render, request_json, scope, viewer
from web.plugins.calls.http import DISPOSITION_NAMES
from web.registry import Plugin, path_param, query_param

PLUGIN = Plugin("tasks", templates=str(Path(__file__).parent / "templates"))

# TaskError codes → HTTP status (everything else is a form to say differently: 422)
STATUS_OF = {"not_found": 404, "stale": 409, "closed": 409}

_TIME = {"type": "string", "format": "date-time"}
_NTIME = {"type": ["string", "null"], "format": "date-time"}
_NSTR = {"type": ["string", "null"]}
TASK_ROW = {"type": "object",
            "required": ["id", "kind", "kind_title", "version", "status", "caller_masked",
                         "opened_at", "due_at", "seconds_left", "urgency"],
            "properties": {
                "id": {"type": "integer"}, "kind": {"type": "string"}, "kind_title": {"type": "string"},
                "version": {"type": "integer"}, "status": {"type": "string", "enum": list(STATUSES)},
                "caller_masked": {"type": "string"}, "resident_id": {"type": ["integer", "null"]},
                "resident_name": _NSTR, "owner_staff_id": {"type": ["integer", "null"]},
                "owner_name": _NSTR, "owner_no": _NSTR, "opened_at": _TIME, "due_at": _TIME,
                "seconds_left": {"type": "number"},
                "urgency": {"type": "string", "enum": ["ok", "amber", "red", "overdue", "closed"]}}}
HISTORY_LINE = {"type": "object", "required": ["version", "at", "event"], "properties": {
    "version": {"type": "integer"}, "at": _TIME, "actor_name": _NSTR, "event": {"type": "string"},
    "owner_from_name": _NSTR, "owner_to_name": _NSTR, "reason": {"type": "string"},
    "detail": {"type": "object"}}}
TASK_DETAIL = {"type": "object", "required": [*TASK_ROW["required"], "calls", "history", "outcomes"],
               "properties": {
                   **TASK_ROW["properties"], "summary": {"type": "string"},
                   "attempts": {"type": "integer"}, "last_attempt_at": _NTIME,
                   "next_attempt_at": _NTIME, "attempts_to_unreachable": {"type": "integer"},
                   "outcomes": {"type": "array", "items": {"type": "string"}},
                   "needs_call": {"type": "boolean"}, "closed_at": _NTIME, "close_note": _NSTR,
                   "close_outcome": _NSTR, "late_reason": _NSTR,
                   "evidence_call_id": {"type": ["integer", "null"]}, "overdue_at": _NTIME,
                   "calls": {"type": "array", "items": {"type": "object"}},
                   "history": {"type": "array", "items": HISTORY_LINE}}}
_VERSION = {"type": "integer", "minimum": 1, "description": "the version of the task the writer saw"}
NOTE_BODY = {"type": "object", "required": ["version", "text"], "additionalProperties": False,
             "properties": {"version": _VERSION, "text": {"type": "string", "maxLength": 4000}}}
CLOSE_BODY = {"type": "object", "required": ["version", "status", "note"], "additionalProperties": False,
              "properties": {"version": _VERSION, "status": {"type": "string", "enum": ["done", "unreachable"]},
                             "note": {"type": "string", "maxLength": 4000},
                             "outcome": {"type": ["string", "null"]},
                             "late_reason": {"type": ["string", "null"], "maxLength": 2000}}}
REASSIGN_BODY = {"type": "object", "required": ["version", "to", "reason"], "additionalProperties": False,
                 "properties": {"version": _VERSION,
                                "to": {"type": "string", "maxLength": 32, "description": "staff number (工号)"},
                                "reason": {"type": "string", "maxLength": 2000}}}
LIST_PARAMS = [
    query_param("kind", {"type": "string", "maxLength": 32}),
    query_param("status", {"type": "string", "enum": [*STATUSES, "any"]},
                description="default open; any: every status"),
    query_param("owner", {"type": "string", "maxLength": 32}, description="the owner's staff number"),
]


def _tasks(request: web.Request) -> Tasks:
    extras = console(request).extras
    if "tasks" not in extras:
        extras["tasks"] = Tasks(console(request).pool)
    tasks: Tasks = extras["tasks"]
    return tasks


def refused(exc: TaskError) -> web.HTTPException:
    status = STATUS_OF.get(exc.code, 422)
    return problem(status, exc.code, exc.message)


async def _view(request: web.Request, task_id: int) -> Any:
    c = console(request)
    try:
        return await task_view(c.pool, _tasks(request), scope(request), task_id, now=c.now())
    except TaskError as exc:
        raise refused(exc) from None


def _version(raw: Any) -> int:
    """A form's or body's version: anything but a positive integer is a stale form (409)."""
    text = str(raw).strip() if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    if not text.isascii() or not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise TaskError("stale", "no version")
    return int(text)


def _str(body: Any, name: str) -> str | None:
    value = body.get(name) if isinstance(body, dict) else None
    if value is not None and not isinstance(value, str):
        raise problem(422, "invalid", f"{name}: 应为文本")
    return value


async def _note(request: web.Request, task_id: int, body: Any) -> Any:
    return await _tasks(request).note(
        task_id, version=_version(body.get("version")), actor_staff_id=viewer(request).staff_id,
        text=_str(body, "text") or "", scope=scope(request), at=console(request).now())


async def _close(request: web.Request, task_id: int, body: Any) -> Any:
    return await _tasks(request).close(
        task_id, version=_version(body.get("version")), actor_staff_id=viewer(request).staff_id,
        status=_str(body, "status") or "", note=_str(body, "note") or "",
        outcome=_str(body, "outcome") or None, late_reason=_str(body, "late_reason") or None,
        scope=scope(request), at=console(request).now())


async def _reassign(request: web.Request, task_id: int, body: Any) -> Any:
    tasks, who, c = _tasks(request), viewer(request), console(request)
    version = _version(body.get("version"))
    # the task first: one out of scope answers not_found whoever it names as the new owner
    await tasks.get(task_id, scope(request))
    to = await tasks.staff_id(_str(body, "to") or "")
    reason = _str(body, "reason") or ""
    moved = await tasks.reassign(task_id, version=version, actor_staff_id=who.staff_id,
                                 to_staff_id=to, reason=reason, scope=scope(request), at=c.now())
    async with c.pool.acquire() as conn:
        await record_read(conn, actor=who.actor, action="task.reassigned",
                          subject=subject("task", task_id), reason=reason.strip()[:1000])
    return moved


ACTIONS = {"note": _note, "close": _close, "reassign": _reassign}


# -- pages ---------------------------------------------------------------------------------------

def _page(request: web.Request, view: Any, *, status: int = 200, error: str | None = None,
          form: dict[str, str] | None = None, failed: str | None = None) -> web.Response:
    s = scope(request)
    return render(request, "tasks/task.html", status=status, v=view, t=view.task,
                  error=error, failed=failed, form=form or {}, status_names=STATUS_NAMES,
                  outcome_names=OUTCOME_NAMES, event_names=EVENT_NAMES,
                  attempt_names=ATTEMPT_NAMES, dispositions=DISPOSITION_NAMES,
                  reason_names=REASON_NAMES, can_write=not s.read_only,
                  can_reassign=s.can("tasks.reassign"))


@PLUGIN.page("GET", "/tasks/{task_id}", capability="tasks")
async def task_page(request: web.Request) -> web.StreamResponse:
    return _page(request, await _view(request, int_param(request, "task_id")))


async def _form_action(request: web.Request, action: str) -> web.StreamResponse:
    task_id = int_param(request, "task_id")
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str) and k != "csrf_token"}
    try:
        await ACTIONS[action](request, task_id, form)
    except TaskError as exc:
        status = STATUS_OF.get(exc.code, 422)
        if status == 404:
            raise refused(exc) from None
        return _page(request, await _view(request, task_id), status=status, error=exc.message,
                     form=form, failed=action)
    raise web.HTTPSeeOther(f"/tasks/{task_id}")


@PLUGIN.page("POST", "/tasks/{task_id}/note", capability="tasks", writes=True)
async def note_form(request: web.Request) -> web.StreamResponse:
    return await _form_action(request, "note")


@PLUGIN.page("POST", "/tasks/{task_id}/close", capability="tasks", writes=True)
async def close_form(request: web.Request) -> web.StreamResponse:
    return await _form_action(request, "close")


@PLUGIN.page("POST", "/tasks/{task_id}/reassign", capability="tasks.reassign", writes=True)
async def reassign_form(request: web.Request) -> web.StreamResponse:
    return await _form_action(request, "reassign")


# -- the API -------------------------------------------------------------------------------------

@PLUGIN.api("GET", "/api/v1/tasks", capability="tasks", parameters=LIST_PARAMS,
            summary="tasks in my scope, soonest due first (default: the open ones)",
            response={"type": "object", "required": ["tasks"],
                      "properties": {"tasks": {"type": "array", "items": TASK_ROW}}})
async def tasks_api(request: web.Request) -> web.StreamResponse:
    q, c = request.query, console(request)
    status = q.get("status", "open").strip() or "open"
    try:
        owner = await _tasks(request).staff_id(q["owner"]) if q.get("owner", "").strip() else None
        filt = TaskFilter(kind=q.get("kind", "").strip() or None,
                          status=None if status == "any" else status, owner_staff_id=owner)
        rows = await list_tasks(c.pool, _tasks(request), scope(request), filt, now=c.now())
    except TaskError as exc:
        if exc.code == "unknown_staff":  # an owner nobody is owns nothing: an empty list
            return json_response({"tasks": []})
        raise problem(422, exc.code, exc.message) from None
    return json_response({"tasks": rows})


@PLUGIN.api("GET", "/api/v1/tasks/{task_id}", capability="tasks", parameters=[path_param("task_id")],
            summary="one task: its calls, attempts and history", response=TASK_DETAIL)
async def task_api(request: web.Request) -> web.StreamResponse:
    return json_response((await _view(request, int_param(request, "task_id"))).as_json())


@PLUGIN.api("GET", "/api/v1/tasks/{task_id}/history", capability="tasks",
            parameters=[path_param("task_id")], summary="a task's events: who, when, what",
            response={"type": "object", "required": ["history"],
                      "properties": {"history": {"type": "array", "items": HISTORY_LINE}}})
async def history_api(request: web.Request) -> web.StreamResponse:
    view = await _view(request, int_param(request, "task_id"))
    return json_response({"history": [history_json(h) for h in view.history]})


async def _api_action(request: web.Request, action: str) -> web.StreamResponse:
    task_id = int_param(request, "task_id")
    body = await request_json(request)
    if not isinstance(body, dict):
        raise problem(422, "invalid", "请求体应为对象")
    try:
        await ACTIONS[action](request, task_id, body)
    except TaskError as exc:
        raise refused(exc) from None
    return json_response((await _view(request, task_id)).as_json())


@PLUGIN.api("POST", "/api/v1/tasks/{task_id}/note", capability="tasks", writes=True,
            parameters=[path_param("task_id")], request_body=NOTE_BODY, response=TASK_DETAIL,
            summary="add a note to a task (409: the version is not the task's)")
async def note_api(request: web.Request) -> web.StreamResponse:
    return await _api_action(request, "note")


@PLUGIN.api("POST", "/api/v1/tasks/{task_id}/close", capability="tasks", writes=True,
            parameters=[path_param("task_id")], request_body=CLOSE_BODY, response=TASK_DETAIL,
            summary="close a task: done (with an answered call since it opened, a note, the "
                    "outcome its kind asks for, the reason when late) or unreachable (after the "
                    "kind's attempts); 422 says what is missing, 409 a stale version")
async def close_api(request: web.Request) -> web.StreamResponse:
    return await _api_action(request, "close")


@PLUGIN.api("POST", "/api/v1/tasks/{task_id}/reassign", capability="tasks.reassign", writes=True,
            parameters=[path_param("task_id")], request_body=REASSIGN_BODY, response=TASK_DETAIL,
            summary="give a task to someone else by hand, with the reason (audited)")
async def reassign_api(request: web.Request) -> web.StreamResponse:
    return await _api_action(request, "reassign")
