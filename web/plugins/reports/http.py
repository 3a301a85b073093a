"""报表 (reports): per doctor / team / center / district and day / week / month, with a chart per
figure (server-rendered SVG: the console runs air-gapped) and a CSV export (audited)."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from markupsafe import Markup

from recordings.reports import FIGURES, ReportRow, bucket_starts, combined, report, series
from store.audit import record_read
from web.app import console, json_response, problem, render, scope, viewer
from web.charts import svg_chart
from web.exports import CsvFile, export_reason
from web.registry import NavItem, Plugin, query_param

PLUGIN = Plugin("reports", nav=(NavItem("/reports", "报表", "reports", order=60),),
                templates=str(Path(__file__).parent / "templates"))
LEVELS = {"district": "全区", "center": "中心", "team": "团队", "doctor": "医生"}
PERIODS = {"day": "日", "week": "周", "month": "月"}
MAX_DAYS = 400

PARAMS = [
    query_param("level", {"type": "string", "enum": list(LEVELS)}),
    query_param("period", {"type": "string", "enum": list(PERIODS)}),
    query_param("since", {"type": "string", "format": "date"}),
    query_param("until", {"type": "string", "format": "date"}),
]
_NUM = {"type": ["number", "null"]}
ROW = {"type": "object", "required": ["level", "group_id", "group_name", "bucket", "offered", "answered"],
       "properties": {
           "level": {"type": "string"}, "group_id": {"type": ["integer", "null"]},
           "group_name": {"type": "string"}, "bucket": {"type": "string", "format": "date"},
           "offered": {"type": "integer"}, "answered": {"type": "integer"}, "answered_rate": _NUM,
           "avg_answer_s": _NUM, "p90_answer_s": _NUM, "abandoned": {"type": "integer"},
           "callbacks_opened": {"type": "integer"}, "callbacks_on_time": {"type": "integer"},
           "callbacks_late": {"type": "integer"}, "callbacks_open_overdue": {"type": "integer"}}}


def _choice(request: web.Request, name: str, options: dict[str, str], default: str) -> str:
    value = request.query.get(name, "") or default
    if value not in options:
        raise problem(422, "bad_choice", f"{name}: 应为 {'、'.join(options)} 之一")
    return value


def _day(request: web.Request, name: str, default: date) -> date:
    raw = request.query.get(name, "").strip()
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise problem(422, "bad_date", f"{name}: 日期格式应为 YYYY-MM-DD") from None


async def _report(request: web.Request) -> tuple[dict[str, Any], list[ReportRow]]:
    c = console(request)
    today = c.now().astimezone(c.tz).date()
    level = _choice(request, "level", LEVELS, "center")
    period = _choice(request, "period", PERIODS, "day")
    since = _day(request, "since", today - timedelta(days=13))
    until = _day(request, "until", today)
    if since > until:
        raise problem(422, "bad_range", "起始日期不能晚于结束日期")
    if (until - since).days > MAX_DAYS:
        raise problem(422, "range_too_long", f"一次最多查询 {MAX_DAYS} 天")
    try:
        rows = await report(c.pool, scope(request), level=level, period=period, since=since,
                            until=until, tz=c.tz, now=c.now())
    except ValueError as exc:
        raise problem(422, "bad_report", str(exc)) from None
    return {"level": level, "period": period, "since": since, "until": until}, rows


def _charts(rows: list[ReportRow], chosen: dict[str, Any]) -> list[Markup]:
    """One chart per figure over every bucket of the range, the report's groups added up."""
    whole = combined(rows)
    buckets = bucket_starts(chosen["period"], chosen["since"], chosen["until"])
    # svg_chart escapes every label it writes: its output is markup we made
    return [Markup(svg_chart(f.title, series(whole, f, buckets, group_id=None), unit=f.unit))  # noqa: S704
            for f in FIGURES]


@PLUGIN.page("GET", "/reports", capability="reports")
async def reports_page(request: web.Request) -> web.StreamResponse:
    chosen, rows = await _report(request)
    return render(request, "reports/reports.html", rows=rows, chosen=chosen, levels=LEVELS,
                  periods=PERIODS, charts=_charts(rows, chosen), can_export=scope(request).can("export"))


@PLUGIN.api("GET", "/api/v1/reports", capability="reports", summary="call and callback figures per group and period",
            parameters=PARAMS, response={"type": "object", "required": ["rows"], "properties": {
                "rows": {"type": "array", "items": ROW}}})
async def reports_api(request: web.Request) -> web.StreamResponse:
    _, rows = await _report(request)
    return json_response({"rows": [dataclasses.asdict(r) for r in rows]})


@PLUGIN.api("GET", "/api/v1/reports/export.csv", capability="export",
            summary="the report as CSV (UTF-8 with BOM); audited with the reason", content_type="text/csv",
            response={"type": "string"},
            parameters=[*PARAMS, query_param("reason", {"type": "string", "minLength": 2, "maxLength": 200},
                                             required=True)])
async def reports_export(request: web.Request) -> web.StreamResponse:
    reason = export_reason(request)
    if not scope(request).can("reports"):  # the route's capability is export; the data is a report
        raise web.HTTPForbidden()
    chosen, rows = await _report(request)
    columns = [f.name for f in dataclasses.fields(ReportRow)]
    csv = CsvFile(columns)
    for r in rows:
        csv.write(getattr(r, name) for name in columns)
    c = console(request)
    async with c.pool.acquire() as conn:
        await record_read(conn, actor=viewer(request).actor, action="reports.exported", subject="export:reports",
                          reason=f"{reason} [{len(rows)} rows; {chosen['level']}/{chosen['period']} "
                                 f"{chosen['since']}..{chosen['until']}]")
    return csv.response("report.csv")
