"""履约 (promises kept): the on-time rate of callbacks, referral follow-ups and handover items per
doctor / team / center / district and day / week / month, every late or unreachable task listed
with its reason, a chart of the rate and a CSV export (audited). The figures are
handover/promise_reports.py's; this is its page and its API."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from markupsafe import Markup

from handover.promise_reports import KINDS, PromiseReport, combined, promise_report
from recordings.reports import bucket_starts
from store.audit import record_read
from web.app import console, json_response, problem, render, scope, viewer
from web.charts import svg_chart
from web.exports import CsvFile, export_reason
from web.plugins.reports.http import LEVELS, MAX_DAYS, PERIODS, _choice, _day
from web.registry import NavItem, Plugin, query_param

PLUGIN = Plugin("promises", nav=(NavItem("/promises", "履约", "reports", order=65),),
                templates=str(Path(__file__).parent / "templates"))
KIND_TITLES = {"": "全部", "callback": "未接来电回拨", "referral_followup": "转诊回访", "handover": "夜间交班事项"}
PAGE_LIST = 500  # the late/unreachable rows a page shows (the CSV has them all, up to LIST_MAX)
STATUS_TITLES = {"done": "超时完成", "unreachable": "无法联系", "open": "逾期未完成"}

PARAMS = [
    query_param("level", {"type": "string", "enum": list(LEVELS)}),
    query_param("period", {"type": "string", "enum": list(PERIODS)}),
    query_param("since", {"type": "string", "format": "date"}),
    query_param("until", {"type": "string", "format": "date"}),
    query_param("kind", {"type": "string", "enum": ["", *KINDS]}, description="empty: every kind"),
]
_INT = {"type": "integer"}
_TEXT = {"type": "string"}
ROW = {"type": "object", "required": ["level", "group_id", "group_name", "kind", "bucket", "due", "on_time",
                                      "late", "unreachable", "open_overdue", "on_time_rate"],
       "properties": {"level": _TEXT, "group_id": {"type": ["integer", "null"]}, "group_name": _TEXT,
                      "kind": _TEXT, "bucket": {"type": "string", "format": "date"}, "due": _INT,
                      "on_time": _INT, "late": _INT, "unreachable": _INT, "open_overdue": _INT,
                      "on_time_rate": {"type": ["number", "null"]}}}
BROKEN = {"type": "object", "required": ["task_id", "kind", "status", "resident_masked", "due_at"],
          "properties": {"task_id": _INT, "kind": _TEXT, "status": _TEXT, "resident_masked": _TEXT,
                         "owner_no": {"type": ["string", "null"]}, "owner_name": {"type": ["string", "null"]},
                         "closed_by_no": {"type": ["string", "null"]},
                         "due_at": {"type": "string", "format": "date-time"},
                         "closed_at": {"type": ["string", "null"], "format": "date-time"},
                         "late_reason": _TEXT, "close_note": _TEXT}}
CSV_COLUMNS = ("level", "group_id", "group_name", "kind", "bucket", "due", "on_time", "late", "unreachable",
               "open_overdue", "on_time_rate")
CSV_BROKEN = ("task_id", "kind", "status", "resident_masked", "owner_no", "owner_name", "closed_by_no",
              "due_at", "closed_at", "late_reason", "close_note")


async def _report(request: web.Request) -> tuple[dict[str, Any], PromiseReport]:
    c = console(request)
    today = c.now().astimezone(c.tz).date()
    level = _choice(request, "level", LEVELS, "center")
    period = _choice(request, "period", PERIODS, "day")
    kind = request.query.get("kind", "")
    if kind and kind not in KINDS:
        raise problem(422, "bad_choice", f"kind: 应为 {'、'.join(KINDS)} 之一")
    since = _day(request, "since", today - timedelta(days=13))
    until = _day(request, "until", today)
    if since > until:
        raise problem(422, "bad_range", "起始日期不能晚于结束日期")
    if (until - since).days > MAX_DAYS:
        raise problem(422, "range_too_long", f"一次最多查询 {MAX_DAYS} 天")
    found = await promise_report(c.pool, scope(request), level=level, period=period, since=since,
                                 until=until, kinds=(kind,) if kind else KINDS, tz=c.tz, now=c.now())
    return {"level": level, "period": period, "since": since, "until": until, "kind": kind}, found


def _row(r: Any) -> dict[str, Any]:
    return {**dataclasses.asdict(r), "on_time_rate": r.on_time_rate}


async def _audit(request: web.Request, action: str, reason: str, chosen: dict[str, Any], found: PromiseReport) -> None:
    """The list names residents (masked) and what was done for them: a read of personal data."""
    async with console(request).pool.acquire() as conn:
        await record_read(conn, actor=viewer(request).actor, action=action, subject="report:promises",
                          reason=f"{reason} [{len(found.rows)} rows, {len(found.broken)} late/unreachable;"
                                 f" {chosen['level']}/{chosen['period']}/{chosen['kind'] or 'all'}"
                                 f" {chosen['since']}..{chosen['until']}]")


@PLUGIN.page("GET", "/promises", capability="reports")
async def promises_page(request: web.Request) -> web.StreamResponse:
    chosen, found = await _report(request)
    await _audit(request, "promises.viewed", "履约报表", chosen, found)
    buckets = bucket_starts(chosen["period"], chosen["since"], chosen["until"])
    whole = {r.bucket: r for r in combined(found.rows)}
    points = [(b.isoformat(), None if b not in whole or whole[b].on_time_rate is None
               else whole[b].on_time_rate * 100) for b in buckets]
    # svg_chart escapes every label it writes: its output is markup we made
    chart = Markup(svg_chart("按时履约率", points, unit="%", kind="line"))  # noqa: S704
    return render(request, "promises/promises.html", found=found, chosen=chosen, levels=LEVELS, periods=PERIODS,
                  kinds=KIND_TITLES, statuses=STATUS_TITLES, page_list=PAGE_LIST, chart=chart, can_export=scope(request).can("export"))


@PLUGIN.api("GET", "/api/v1/promises/report", capability="reports",
            summary="on-time rate of callbacks, referral follow-ups and handover items; the late and unreachable listed",
            parameters=PARAMS, response={"type": "object", "required": ["rows", "broken", "truncated"], "properties": {
                "rows": {"type": "array", "items": ROW}, "broken": {"type": "array", "items": BROKEN},
                "truncated": {"type": "boolean"}}})
async def promises_api(request: web.Request) -> web.StreamResponse:
    chosen, found = await _report(request)
    await _audit(request, "promises.read", "履约报表 API", chosen, found)
    return json_response({"rows": [_row(r) for r in found.rows],
                          "broken": [dataclasses.asdict(b) for b in found.broken], "truncated": found.truncated})


@PLUGIN.api("GET", "/api/v1/promises/report/export.csv", capability="export",
            summary="the promises report as CSV (UTF-8 with BOM): the table, then the late and unreachable tasks;"
                    " audited with the reason", content_type="text/csv", response={"type": "string"},
            parameters=[*PARAMS, query_param("reason", {"type": "string", "minLength": 2, "maxLength": 200},
                                             required=True)])
async def promises_export(request: web.Request) -> web.StreamResponse:
    reason = export_reason(request)
    if not scope(request).can("reports"):  # the route's capability is export; the data is a report
        raise web.HTTPForbidden()
    chosen, found = await _report(request)
    csv = CsvFile(CSV_COLUMNS)
    for r in found.rows:
        values = _row(r)
        csv.write(values[name] for name in CSV_COLUMNS)
    # the second table of the file: a blank line, its own header, one line per broken promise
    csv.write(())
    csv.write(CSV_BROKEN)
    for b in found.broken:
        values = dataclasses.asdict(b)
        csv.write(values[name] for name in CSV_BROKEN)
    if found.truncated:
        csv.write(("（清单已截断）",))
    await _audit(request, "promises.exported", reason, chosen, found)
    return csv.response("promises.csv")
