"""转诊 (referrals): the list per doctor and center, the form that records one, and the API.

Thin over handover.referrals: recording a referral opens its 72-hour follow-up task in the same
transaction; a resident out of the recorder's scope is refused exactly as one that does not
exist (422 "没有这个居民"), and a refused referral writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from handover.referrals import ReferralError, Referrals
from handover.task_view import OUTCOME_NAMES, STATUS_NAMES
from handover.tasks import STATUSES
from routing.directory import Directory
from routing.numbers import InvalidNumber
from web.app import console, json_response, problem, render, request_json, scope
from web.registry import NavItem, Plugin, query_param

PLUGIN = Plugin("referrals", nav=(NavItem("/referrals", "转诊", "referrals", order=25),),
                templates=str(Path(__file__).parent / "templates"))

_TIME = {"type": "string", "format": "date-time"}
REFERRAL = {"type": "object",
            "required": ["id", "resident_id", "resident_name", "hospital", "department", "reason",
                         "referred_at", "recorded_by_name", "followup_task_id", "followup_status",
                         "followup_due_at"],
            "properties": {
                "id": {"type": "integer"}, "resident_id": {"type": "integer"},
                "resident_name": {"type": "string"}, "hospital": {"type": "string"},
                "department": {"type": "string"}, "reason": {"type": "string"},
                "referred_at": _TIME, "recorded_by": {"type": "integer"},
                "recorded_by_no": {"type": "string"}, "recorded_by_name": {"type": "string"},
                "recorded_at": _TIME, "followup_task_id": {"type": "integer"},
                "followup_status": {"type": "string", "enum": list(STATUSES)},
                "followup_due_at": _TIME, "followup_owner_name": {"type": ["string", "null"]},
                "followup_outcome": {"type": ["string", "null"]}}}
NEW_REFERRAL = {"type": "object", "additionalProperties": False,
                "required": ["resident_id", "hospital", "department", "reason"],
                "properties": {
                    "resident_id": {"type": "integer", "minimum": 1},
                    "hospital": {"type": "string", "maxLength": 200},
                    "department": {"type": "string", "maxLength": 100},
                    "reason": {"type": "string", "maxLength": 2000},
                    "referred_at": {"type": ["string", "null"], "format": "date-time",
                                    "description": "when (default now; within the last 7 days)"}}}
_ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
LIST_PARAMS = [query_param("doctor", {"type": "string", "maxLength": 32},
                           description="staff number: referrals she recorded or follows up"),
               query_param("center", _ID, description="the residents' center"),
               query_param("status", {"type": "string", "enum": list(STATUSES)},
                           description="the follow-up's status")]


def _referrals(request: web.Request) -> Referrals:
    c = console(request)
    if "referrals" not in c.extras:
        c.extras["referrals"] = Referrals(c.pool, c.tz)
    referrals: Referrals = c.extras["referrals"]
    return referrals


def _when(raw: Any, request: web.Request) -> datetime | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str):
        raise ReferralError("bad_time")
    try:
        at = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ReferralError("bad_time") from None
    return at if at.tzinfo else at.replace(tzinfo=console(request).tz)


def _resident_id(raw: Any) -> int:
    text = str(raw).strip() if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    if not text.isascii() or not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise ReferralError("unknown_resident")
    return int(text)


async def _form_resident(request: web.Request, text: str) -> int:
    """The form's resident as a person types it: the resident's id (id:N, or up to 6 digits), her
    phone number or her ID-card number — the one of its holders in the recorder's scope."""
    c = console(request)
    try:
        ids = await Directory(c.pool, c.vault, area_code=c.area_code).resident_ids(text.strip()[:64])
    except InvalidNumber:
        raise ReferralError("unknown_resident") from None
    return await _referrals(request).resident_in_scope(scope(request), ids)


def _text(body: Any, name: str) -> str:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ReferralError("required")
    return value or ""


async def _add(request: web.Request, body: Any, *, form: bool = False) -> Any:
    c = console(request)
    resident = (await _form_resident(request, _text(body, "resident")) if form
                else _resident_id(body.get("resident_id")))
    return await _referrals(request).add(
        scope(request), resident_id=resident,
        hospital=_text(body, "hospital"), department=_text(body, "department"),
        reason=_text(body, "reason"), referred_at=_when(body.get("referred_at"), request), now=c.now())


async def _list(request: web.Request, query: MultiMapping[str]) -> list[Any]:
    doctor_id = center_id = None
    if query.get("doctor", "").strip():
        doctor_id = await console(request).pool.fetchval(
            "SELECT id FROM staff WHERE staff_no = $1", query["doctor"].strip()[:32])
        if doctor_id is None:
            return []
    raw_center = query.get("center", "").strip()
    if raw_center:
        if not raw_center.isascii() or not raw_center.isdigit() or len(raw_center) > 9:
            raise problem(422, "bad_id", "center: 应为正整数")
        center_id = int(raw_center)
    status = query.get("status", "").strip() or None
    if status is not None and status not in STATUSES:
        raise problem(422, "bad_status", "status: 不支持的状态")
    return await _referrals(request).list(scope(request), doctor_id=doctor_id, center_id=center_id,
                                          status=status)


def _page(request: web.Request, rows: list[Any], *, status: int = 200, error: str | None = None,
          form: dict[str, str] | None = None) -> web.Response:
    return render(request, "referrals/list.html", status=status, referrals=rows, error=error,
                  form=form or {}, query=dict(request.query), can_add=scope(request).can("referrals.add"),
                  status_names=STATUS_NAMES, outcome_names=OUTCOME_NAMES)


@PLUGIN.page("GET", "/referrals", capability="referrals")
async def referrals_page(request: web.Request) -> web.StreamResponse:
    return _page(request, await _list(request, request.query))


@PLUGIN.page("POST", "/referrals", capability="referrals.add", writes=True)
async def referral_form(request: web.Request) -> web.StreamResponse:
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str) and k != "csrf_token"}
    try:
        added = await _add(request, form, form=True)
    except ReferralError as exc:
        return _page(request, await _list(request, request.query), status=422, error=exc.message,
                     form=form)
    raise web.HTTPSeeOther(f"/tasks/{added.followup_task_id}")


@PLUGIN.api("GET", "/api/v1/referrals", capability="referrals", parameters=LIST_PARAMS,
            summary="referrals in my scope, newest first, with their follow-up",
            response={"type": "object", "required": ["referrals"],
                      "properties": {"referrals": {"type": "array", "items": REFERRAL}}})
async def referrals_api(request: web.Request) -> web.StreamResponse:
    return json_response({"referrals": [r.as_json() for r in await _list(request, request.query)]})


@PLUGIN.api("POST", "/api/v1/referrals", capability="referrals.add", writes=True,
            request_body=NEW_REFERRAL, response=REFERRAL,
            summary="record a referral: opens its follow-up task, due 72 h later, owned by the "
                    "resident's family doctor; 422 for a resident not in my scope or bad input")
async def referral_add_api(request: web.Request) -> web.StreamResponse:
    body = await request_json(request)
    if not isinstance(body, dict):
        raise problem(422, "invalid", "请求体应为对象")
    try:
        added = await _add(request, body)
    except ReferralError as exc:
        raise problem(422, exc.code, exc.message) from None
    return json_response(added.as_json())
