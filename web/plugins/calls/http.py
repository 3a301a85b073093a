"""通话记录 (calls): the list with its filters and CSV export, one call's detail, its recording."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from recordings.call_search import (
    EXPORT_COLUMNS,
    SEARCH_DISPOSITIONS,
    CallFilter,
    CallSearch,
    export_values,
    verify_checksum,
)
from routing.reason_zh import DISPOSITIONS_ZH
from routing.staff_admin import list_staff
from store.audit import record_read
from web.app import console, int_param, json_response, problem, render, scope, viewer
from web.exports import CsvFile, export_reason
from web.media import stream_audio
from web.registry import NavItem, Plugin, path_param, query_param

PLUGIN = Plugin("calls", nav=(NavItem("/calls", "通话记录", "calls", order=30),),
                templates=str(Path(__file__).parent / "templates"))

DISPOSITION_NAMES = DISPOSITIONS_ZH
PAGE_SIZE = 50
EXPORT_LIMIT = 100_000
CHOICES_LIMIT = 500  # staff offered in the filter's list (the viewer's scope only)

_ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_TEXT = {"type": "string", "minLength": 1, "maxLength": 64}
FILTER_PARAMS = [
    query_param("since", {"type": "string", "format": "date"}, description="first day (Asia/Shanghai)"),
    query_param("until", {"type": "string", "format": "date"}, description="last day, inclusive"),
    query_param("center", _ID), query_param("team", _ID), query_param("staff", _ID),
    query_param("disposition", {"type": "string", "enum": list(SEARCH_DISPOSITIONS)}),
    query_param("line", _TEXT), query_param("resident", _ID),
    query_param("phone", _TEXT, description="the caller's number in any form"),
    query_param("name", _TEXT, description="the resident's name or its beginning"),
]
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
CALL_ROW = {"type": "object", "required": ["id", "offered_at", "caller_number_masked", "disposition"],
            "properties": {
                "id": {"type": "integer"}, "offered_at": {"type": "string", "format": "date-time"},
                "caller_number_masked": {"type": "string"},
                "resident_id": {"type": ["integer", "null"]}, "resident_name": {"type": ["string", "null"]},
                "line": {"type": ["string", "null"]}, "center_name": {"type": ["string", "null"]},
                "team_name": {"type": ["string", "null"]}, "disposition": {"type": "string"},
                "answered_by_name": {"type": ["string", "null"]}, "connected_at": _NULLABLE_TIME,
                "ended_at": _NULLABLE_TIME, "duration_s": {"type": ["number", "null"]},
                "time_to_answer_s": {"type": ["number", "null"]}, "has_recording": {"type": "boolean"},
            }}
CALL_PAGE = {"type": "object", "required": ["calls", "next"], "properties": {
    "calls": {"type": "array", "items": CALL_ROW}, "next": {"type": ["string", "null"]}}}
CALL_DETAIL = {"type": "object",
               "required": ["call", "route_reason", "route_explanation", "timeline", "attempts"],
               "properties": {
                   "call": CALL_ROW, "route_service": {"type": ["string", "null"]},
                   "route_reason": {"type": "string"}, "route_explanation": {"type": "object"},
                   "end_reason": {"type": ["string", "null"]},
                   "recovery_note": {"type": ["string", "null"]},
                   "attempts": {"type": "array", "items": {"type": "object"}},
                   "keys": {"type": "array", "items": {"type": "object"}},
                   "holds": {"type": "array", "items": {"type": "object"}},
                   "timeline": {"type": "array", "items": {
                       "type": "object", "required": ["at", "kind"],
                       "properties": {"at": {"type": "string", "format": "date-time"},
                                      "kind": {"type": "string"}, "detail": {"type": "object"}}}},
                   "recording": {"type": ["object", "null"]},
                   "callback": {"type": ["object", "null"]},
               }}


def _day(query: MultiMapping[str], name: str) -> date | None:
    raw = query.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise problem(422, "bad_date", f"{name}: 日期格式应为 YYYY-MM-DD") from None


def _id(query: MultiMapping[str], name: str) -> int | None:
    raw = query.get(name, "").strip()
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise problem(422, "bad_id", f"{name}: 应为正整数")
    return int(raw)


def _text(query: MultiMapping[str], name: str) -> str | None:
    raw = query.get(name, "").strip()
    return raw or None


def parse_filter(request: web.Request) -> CallFilter:
    """The list's filters from the query string; 422 with what is wrong, in words."""
    q, tz = request.query, console(request).tz
    since, until = _day(q, "since"), _day(q, "until")
    disposition = _text(q, "disposition")
    try:
        return CallFilter(
            since=datetime.combine(since, time(0), tz) if since else None,
            until=datetime.combine(until + timedelta(days=1), time(0), tz) if until else None,
            center_id=_id(q, "center"), team_id=_id(q, "team"), staff_id=_id(q, "staff"),
            disposition=disposition, line=_text(q, "line"), resident_id=_id(q, "resident"),
            caller_number=_text(q, "phone"), resident_name=_text(q, "name"))
    except ValueError as exc:
        raise problem(422, "bad_filter", f"筛选条件有误：{exc}") from None


def _search(request: web.Request) -> CallSearch:
    c = console(request)
    return CallSearch(c.pool, c.vault)


async def _page(request: web.Request) -> tuple[CallFilter, Any]:
    filt = parse_filter(request)
    after = request.query.get("after") or None
    try:
        return filt, await _search(request).page(scope(request), filt, after=after, limit=PAGE_SIZE)
    except ValueError as exc:
        if "cursor" in str(exc):
            raise problem(422, "bad_cursor", "翻页参数有误，请从第一页重新查询") from None
        raise problem(422, "bad_filter", f"筛选条件有误：{exc}") from None


@PLUGIN.page("GET", "/calls", capability="calls")
async def calls_page(request: web.Request) -> web.StreamResponse:
    filt, page = await _page(request)
    query = {k: v for k, v in request.query.items() if k != "after"}
    async with console(request).pool.acquire() as conn:
        people = await list_staff(conn, scope(request), limit=CHOICES_LIMIT)
    centers = sorted({(s.center_id, s.center) for s in people if s.center_id}, key=lambda c: c[0])
    teams = sorted({(s.team_id, s.team, s.center) for s in people if s.team_id}, key=lambda t: t[0])
    return render(request, "calls/list.html", calls=page.rows, next_cursor=page.next_cursor,
                  query=query, dispositions=DISPOSITION_NAMES, can_export=scope(request).can("export"),
                  centers=centers, teams=teams, people=people)


@PLUGIN.api("GET", "/api/v1/calls", capability="calls", summary="calls in my scope, newest first",
            response=CALL_PAGE,
            parameters=[*FILTER_PARAMS, query_param("after", {"type": "string", "maxLength": 128},
                                                    description="the cursor of the next page")])
async def calls_api(request: web.Request) -> web.StreamResponse:
    _, page = await _page(request)
    return json_response({"calls": [row.as_json() for row in page.rows], "next": page.next_cursor})


@PLUGIN.api("GET", "/api/v1/calls/export.csv", capability="export",
            summary="the filtered calls as CSV (UTF-8 with BOM, formula-safe); audited with the reason",
            content_type="text/csv", response={"type": "string"},
            parameters=[*FILTER_PARAMS, query_param("reason", {"type": "string", "minLength": 2,
                                                               "maxLength": 200}, required=True)])
async def calls_export(request: web.Request) -> web.StreamResponse:
    reason = export_reason(request)
    filt = parse_filter(request)
    c, who = console(request), viewer(request)
    csv = CsvFile(EXPORT_COLUMNS)
    try:
        async for row in _search(request).export_rows(scope(request), filt, limit=EXPORT_LIMIT):
            csv.write(export_values(row))
    except ValueError as exc:  # a filter only the search can judge (a number that is none)
        raise problem(422, "bad_filter", f"筛选条件有误：{exc}") from None
    async with c.pool.acquire() as conn:
        described = ", ".join(f"{k}={v}" for k, v in sorted(request.query.items())
                              if k not in ("reason", "phone"))
        await record_read(conn, actor=who.actor, action="calls.exported", subject="export:calls",
                          reason=f"{reason} [{csv.rows} rows; {described}]"[:1000])
    return csv.response(f"calls-{c.now().astimezone(c.tz):%Y%m%d-%H%M}.csv")


async def _detail(request: web.Request) -> Any:
    found = await _search(request).detail(scope(request), int_param(request, "call_id"))
    if found is None:
        raise web.HTTPNotFound()
    return found


def detail_json(found: Any) -> dict[str, Any]:
    data = dataclasses.asdict(found)
    data["call"] = found.row.as_json()
    del data["row"]
    return data


@PLUGIN.page("GET", "/calls/{call_id}", capability="calls")
async def call_page(request: web.Request) -> web.StreamResponse:
    found = await _detail(request)
    return render(request, "calls/detail.html", call=found, row=found.row, dispositions=DISPOSITION_NAMES)


@PLUGIN.api("GET", "/api/v1/calls/{call_id}", capability="calls", summary="one call: timeline, route, recording",
            response=CALL_DETAIL, parameters=[path_param("call_id")])
async def call_api(request: web.Request) -> web.StreamResponse:
    return json_response(detail_json(await _detail(request)))


@PLUGIN.api("GET", "/api/v1/calls/{call_id}/recording", capability="recordings",
            summary="the call's stereo recording (WAV: left the caller, right the staff), HTTP Range; audited",
            content_type="audio/wav", response={"type": "string", "contentMediaType": "audio/wav"},
            parameters=[path_param("call_id"),
                        query_param("reason", {"type": "string", "maxLength": 200}),
                        query_param("download", {"type": "string", "enum": ["1"]})])
async def call_recording(request: web.Request) -> web.StreamResponse:
    call_id = int_param(request, "call_id")
    c = console(request)
    found = await CallSearch(c.pool, c.vault).recording(scope(request), call_id)
    if found is None:
        raise web.HTTPNotFound()
    action = "recording.downloaded" if request.query.get("download") == "1" else "recording.played"
    return await stream_audio(request, str(found.path), subject=f"recording:{call_id}", action=action,
                              download_name=f"call-{call_id}.wav")


@PLUGIN.api("GET", "/api/v1/calls/{call_id}/recording/check", capability="recordings",
            summary="is the recording on disk what was recorded (SHA-256 checked now)",
            response={"type": "object", "required": ["sha256", "ok"],
                      "properties": {"sha256": {"type": "string"}, "ok": {"type": "boolean"}}},
            parameters=[path_param("call_id")])
async def call_recording_check(request: web.Request) -> web.StreamResponse:
    call_id = int_param(request, "call_id")
    c = console(request)
    found = await CallSearch(c.pool, c.vault).recording(scope(request), call_id)
    if found is None:
        raise web.HTTPNotFound()
    return json_response({"sha256": found.sha256, "ok": await verify_checksum(found.path, found.sha256)})
