"""审计 (audit): supervisors search who read which resident, call, recording or export."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from store.audit import search_audit
from web.app import console, json_response, problem, render, viewer
from web.registry import NavItem, Plugin, query_param

PLUGIN = Plugin("audit", nav=(NavItem("/audit", "审计", "audit", order=70),),
                templates=str(Path(__file__).parent / "templates"))
PAGE_SIZE = 100

_TEXT = {"type": "string", "maxLength": 120}
PARAMS = [
    query_param("actor", _TEXT, description="staff:<工号> or cli:<user>"),
    query_param("subject", _TEXT, description="resident:<id>, call:<id>, recording:<call id>, …"),
    query_param("action", _TEXT),
    query_param("since", {"type": "string", "format": "date"}),
    query_param("until", {"type": "string", "format": "date"}),
    query_param("after", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}),
]
ROW = {"type": "object", "required": ["id", "at", "actor", "action", "subject", "reason"], "properties": {
    "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
    "actor": {"type": "string"}, "action": {"type": "string"}, "subject": {"type": "string"},
    "reason": {"type": "string"}, "claimed_actor": {"type": ["string", "null"]}}}


def _filters(request: web.Request) -> dict[str, Any]:
    q, tz = request.query, console(request).tz
    found: dict[str, Any] = {}
    for name in ("actor", "subject", "action"):
        value = q.get(name, "").strip()
        if len(value) > 120:
            raise problem(422, "too_long", f"{name}: 最多120个字符")
        found[name] = value or None
    for name, shift in (("since", 0), ("until", 1)):
        raw = q.get(name, "").strip()
        if raw:
            try:
                day = date.fromisoformat(raw)
            except ValueError:
                raise problem(422, "bad_date", f"{name}: 日期格式应为 YYYY-MM-DD") from None
            found[name] = datetime.combine(day + timedelta(days=shift), time(0), tz)
    after = q.get("after", "").strip()
    if after:
        if not after.isascii() or not after.isdigit() or len(after) > 18:
            raise problem(422, "bad_cursor", "after: 应为正整数")
        found["after_id"] = int(after)
    return found


async def _rows(request: web.Request) -> list[dict[str, Any]]:
    # the viewer's district only: the audit log of a shared database holds every district's
    rows = await search_audit(console(request).pool, limit=PAGE_SIZE,
                              district_id=viewer(request).district_id, **_filters(request))
    return [dataclasses.asdict(r) for r in rows]


@PLUGIN.page("GET", "/audit", capability="audit")
async def audit_page(request: web.Request) -> web.StreamResponse:
    rows = await _rows(request)
    query = {k: v for k, v in request.query.items() if k != "after"}
    return render(request, "audit/audit.html", rows=rows, query=query,
                  next_after=rows[-1]["id"] if len(rows) == PAGE_SIZE else None)


@PLUGIN.api("GET", "/api/v1/audit", capability="audit", summary="the audit log, newest first",
            parameters=PARAMS,
            response={"type": "object", "required": ["rows", "next"], "properties": {
                "rows": {"type": "array", "items": ROW}, "next": {"type": ["integer", "null"]}}})
async def audit_api(request: web.Request) -> web.StreamResponse:
    rows = await _rows(request)
    return json_response({"rows": rows, "next": rows[-1]["id"] if len(rows) == PAGE_SIZE else None})
