"""管理: the district administrator's pages and API — staff, residents search, the roster, hotline
lines, prompts and calendar closures.

Thin handlers over the slices' services (routing.staff_admin, routing.resident_search,
routing.roster_edit, routing.lines, routing.calendar_store, ivr.prompt_overrides): the rules are
there, shared with the `hotline` CLI. Every change writes an audit row (store.audit) in the
transaction that makes it, with the signed-in administrator as the actor.
"""

from __future__ import annotations

import calendar as gregorian
import json
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import asyncpg
import structlog
from aiohttp import web

from ivr.prompt_overrides import Override, overrides, prompt_audio, restore_default, set_override
from ivr.prompt_store import PromptRefused
from ivr.prompts import NAMES as PROMPT_NAMES
from ivr.prompts import texts as prompt_texts
from routing.calendar import DEFAULT_DAY_END, DEFAULT_DAY_START
from routing.calendar_store import (
    CalendarError,
    CalendarNotFound,
    close_day,
    district_closures,
    load_calendar,
    parse_date,
    place_in_district,
    reopen_day,
)
from routing.lines import LineError, LineNotFound, add_line, list_lines, remove_line
from routing.resident_search import search_kind, search_residents
from routing.roster_edit import (
    RosterConflict,
    RosterError,
    RosterNotFound,
    gaps_between,
    shifts_between,
    swap_shift,
)
from routing.scope import ROLES
from routing.staff_admin import (
    StaffConflict,
    StaffError,
    StaffNotFound,
    district_places,
    list_staff,
    staff_member,
    update_staff,
)
from store.audit import record_read
from web.app import console, int_param, json_response, problem, render, scope, viewer
from web.plugins.auth.http import ROLE_NAMES
from web.registry import NavItem, Plugin, path_param, query_param

log = structlog.get_logger("web.admin")

CAP = "admin"
PLUGIN = Plugin("admin", nav=(NavItem("/admin", "管理", CAP, order=80),),
                templates=str(Path(__file__).parent / "templates"))

# A prompt is seconds of speech; 20 MB is minutes of uncompressed CD audio. Streamed to a
# temporary file, never held in memory, and refused as soon as it grows past this.
MAX_PROMPT_UPLOAD = 20 * 1024 * 1024
CHUNK = 64 * 1024
MAX_TEXT = 200


# -- small helpers ---------------------------------------------------------------------------------

async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise problem(400, "bad_json", "请求内容不是有效的 JSON") from None
    if not isinstance(body, dict):
        raise problem(400, "bad_json", "请求内容应为 JSON 对象")
    return body


async def _form(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _text(value: Any, what: str, *, required: bool = False, limit: int = MAX_TEXT) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise problem(422, "invalid", f"{what}应为文本")
    value = value.strip()
    if required and not value:
        raise problem(422, "invalid", f"请填写{what}")
    if len(value) > limit or any(ord(ch) < 32 for ch in value):
        raise problem(422, "invalid", f"{what}过长或含有控制字符")
    return value


def _optional_id(value: Any, what: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise problem(422, "invalid", f"{what}无效")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        number = int(value)
    else:
        raise problem(422, "invalid", f"{what}无效")
    if not 1 <= number < 2**31:
        raise problem(422, "invalid", f"{what}无效")
    return number


def _date(value: Any, what: str = "日期") -> date:
    if not isinstance(value, str) or len(value) > 20:
        raise problem(422, "bad_date", f"{what}格式应为 YYYY-MM-DD")
    try:
        return parse_date(value)
    except ValueError:
        raise problem(422, "bad_date", f"{what}格式应为 YYYY-MM-DD：{value}") from None


async def _audit(conn: asyncpg.Connection, request: web.Request, action: str, subject: str,
                 reason: str = "") -> None:
    await record_read(conn, actor=viewer(request).actor, action=action, subject=subject, reason=reason)


def _staff_no(request: web.Request) -> str:
    raw = request.match_info.get("staff_no", "")
    if not raw or len(raw) > 32 or any(ord(ch) < 32 for ch in raw):
        raise web.HTTPNotFound()
    return raw


def _prompt_name(request: web.Request) -> str:
    name = request.match_info.get("name", "")
    if name not in PROMPT_NAMES:  # a path, a dot-dot, a script: names no prompt
        raise problem(404, "no_such_prompt", "没有这个提示音")
    return name


def _back(path: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(path)


# -- staff -------------------------------------------------------------------------------------------

STAFF = {
    "type": "object",
    "required": ["id", "staff_no", "name", "role", "center_id", "center", "team_id", "team",
                 "sip_uri", "left_on"],
    "properties": {
        "id": {"type": "integer"}, "staff_no": {"type": "string"}, "name": {"type": "string"},
        "role": {"type": "string", "enum": list(ROLES)},
        "center_id": {"type": ["integer", "null"]}, "center": {"type": ["string", "null"]},
        "team_id": {"type": ["integer", "null"]}, "team": {"type": ["string", "null"]},
        "sip_uri": {"type": ["string", "null"]},
        "left_on": {"type": ["string", "null"], "format": "date"},
    },
}
STAFF_LIST = {"type": "object", "required": ["staff"],
              "properties": {"staff": {"type": "array", "items": STAFF}}}
STAFF_PATCH = {
    "type": "object", "additionalProperties": False,
    "properties": {"role": {"type": "string", "enum": list(ROLES)},
                   "sip_uri": {"type": ["string", "null"], "maxLength": 200},
                   "team_id": {"type": ["integer", "null"], "minimum": 1}},
}
ONE_TIME_CODE = {"type": "object", "required": ["staff_no", "one_time_code"],
                 "properties": {"staff_no": {"type": "string"}, "one_time_code": {"type": "string"}}}


async def _change_staff(request: web.Request, staff_no: str, given: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if "role" in given:
        role = _text(given["role"], "角色", required=True, limit=32)
        if role not in ROLES:
            raise problem(422, "invalid_role", f"未知角色：{role}")
        changes["role"] = role
    if "sip_uri" in given:
        changes["sip_uri"] = _text(given["sip_uri"], "分机地址")
    if "team_id" in given:
        changes["team_id"] = _optional_id(given["team_id"], "团队")
    c, allowed = console(request), scope(request)
    async with c.pool.acquire() as conn, conn.transaction():
        try:
            before, after = await update_staff(conn, allowed, staff_no, **changes)
        except StaffNotFound:  # its message names the 工号 asked for: a 404 echoes nothing
            raise problem(404, "no_such_staff", "没有这个员工") from None
        except StaffConflict as exc:
            raise problem(409, "extension_taken", str(exc)) from None
        except StaffError as exc:
            raise problem(422, "invalid_staff", str(exc)) from None
        changed = {k: [getattr(before, k), getattr(after, k)] for k in ("role", "sip_uri", "team_id", "center_id")
                   if getattr(before, k) != getattr(after, k)}
        if changed:
            await _audit(conn, request, "admin.staff_updated", f"staff:{staff_no}",
                         json.dumps(changed, ensure_ascii=False, default=str))
    log.info("web.admin.staff_updated", staff_no=staff_no, fields=sorted(changed))
    return after.as_json()


async def _reset_password(request: web.Request, staff_no: str) -> str:
    c = console(request)
    async with c.pool.acquire() as conn:
        member = await staff_member(conn, scope(request), staff_no)
    if member is None:
        raise problem(404, "no_such_staff", "没有这个员工")
    if member.id == viewer(request).staff_id:  # it would end this very session mid-task
        raise problem(422, "own_password", "自己的密码请在“修改密码”页面修改")
    if member.left_on is not None and member.left_on <= c.now().astimezone(c.tz).date():
        raise problem(422, "staff_left", f"{member.name} 已离职，不能重置密码")
    code: str = await c.accounts.issue_one_time_code(member.id, actor=viewer(request).actor)
    async with c.pool.acquire() as conn:
        await _audit(conn, request, "admin.password_reset", f"staff:{staff_no}",
                     "one-time code issued; the other sessions end")
    await c.sessions.end_all(member.id)
    log.info("web.admin.password_reset", staff_no=staff_no)
    return code


@PLUGIN.api("GET", "/api/v1/admin/staff", capability=CAP, summary="staff of the district",
            response=STAFF_LIST, parameters=[query_param("q", {"type": "string", "maxLength": 50},
                                                         description="start of a name or 工号")])
async def api_staff(request: web.Request) -> web.StreamResponse:
    q = _text(request.query.get("q", ""), "查询", limit=50)
    async with console(request).pool.acquire() as conn:
        rows = await list_staff(conn, scope(request), query=q)
    return json_response({"staff": [r.as_json() for r in rows]})


@PLUGIN.api("PATCH", "/api/v1/admin/staff/{staff_no}", capability=CAP, writes=True,
            summary="change a staff member's role, extension or team", response=STAFF,
            parameters=[path_param("staff_no", {"type": "string", "maxLength": 32})],
            request_body=STAFF_PATCH)
async def api_staff_update(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    unknown = set(body) - {"role", "sip_uri", "team_id"}
    if unknown:
        raise problem(422, "invalid", f"不能修改：{', '.join(sorted(unknown))[:100]}")
    return json_response(await _change_staff(request, _staff_no(request), body))


@PLUGIN.api("POST", "/api/v1/admin/staff/{staff_no}/one-time-code", capability=CAP, writes=True,
            summary="reset a password: a one-time code, shown once", response=ONE_TIME_CODE,
            parameters=[path_param("staff_no", {"type": "string", "maxLength": 32})])
async def api_staff_reset(request: web.Request) -> web.StreamResponse:
    staff_no = _staff_no(request)
    return json_response({"staff_no": staff_no, "one_time_code": await _reset_password(request, staff_no)})


@PLUGIN.page("GET", "/admin", capability=CAP)
async def admin_home(request: web.Request) -> web.StreamResponse:
    raise _back("/admin/staff")


@PLUGIN.page("GET", "/admin/staff", capability=CAP)
async def staff_page(request: web.Request) -> web.StreamResponse:
    q = _text(request.query.get("q", ""), "查询", limit=50)
    who = viewer(request)
    async with console(request).pool.acquire() as conn:
        rows = await list_staff(conn, scope(request), query=q)
        _, teams = await district_places(conn, who.district_id)
    return render(request, "admin/staff.html", staff=rows, teams=teams, q=q, roles=ROLE_NAMES)


@PLUGIN.page("POST", "/admin/staff/{staff_no}", capability=CAP, writes=True)
async def staff_save(request: web.Request) -> web.StreamResponse:
    staff_no = _staff_no(request)
    form = await _form(request)
    await _change_staff(request, staff_no, {k: form[k] for k in ("role", "sip_uri", "team_id") if k in form})
    raise _back("/admin/staff")


@PLUGIN.page("POST", "/admin/staff/{staff_no}/password", capability=CAP, writes=True)
async def staff_reset(request: web.Request) -> web.StreamResponse:
    staff_no = _staff_no(request)
    code = await _reset_password(request, staff_no)
    return render(request, "admin/code.html", staff_no=staff_no, code=code)


# -- residents ---------------------------------------------------------------------------------------

RESIDENT = {
    "type": "object", "required": ["id", "name", "id_number", "sex", "center", "phones"],
    "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                   "id_number": {"type": "string"}, "sex": {"type": "string", "enum": ["M", "F"]},
                   "center": {"type": "string"},
                   "phones": {"type": "array", "items": {"type": "string"}}},
}
RESIDENTS = {"type": "object", "required": ["residents"],
             "properties": {"residents": {"type": "array", "items": RESIDENT}}}


async def _search(request: web.Request) -> tuple[str, list[Any]]:
    q = _text(request.query.get("q", ""), "查询", limit=50)
    if not q:
        return q, []
    c = console(request)
    async with c.pool.acquire() as conn, conn.transaction():
        hits = await search_residents(conn, c.vault, scope(request), q, area_code=c.area_code)
        # the search is a look into residents' records: who searched, how, and what was shown
        await _audit(conn, request, "resident.search", "residents",
                     f"by {search_kind(q)}; shown: {','.join(str(h.id) for h in hits) or 'none'}")
    return q, hits


@PLUGIN.api("GET", "/api/v1/admin/residents", capability=CAP, summary="find residents by name or phone (masked)",
            response=RESIDENTS, parameters=[query_param("q", {"type": "string", "maxLength": 50})])
async def api_residents(request: web.Request) -> web.StreamResponse:
    _, hits = await _search(request)
    return json_response({"residents": [h.as_json() for h in hits]})


@PLUGIN.page("GET", "/admin/residents", capability=CAP)
async def residents_page(request: web.Request) -> web.StreamResponse:
    q, hits = await _search(request)
    return render(request, "admin/residents.html", q=q, residents=hits)


# -- roster ------------------------------------------------------------------------------------------

SHIFT = {
    "type": "object",
    "required": ["id", "starts_at", "ends_at", "center_id", "center", "kind", "ring_position",
                 "staff_no", "doctor", "swapped_from"],
    "properties": {
        "id": {"type": "integer"}, "starts_at": {"type": "string", "format": "date-time"},
        "ends_at": {"type": "string", "format": "date-time"},
        "center_id": {"type": ["integer", "null"]}, "center": {"type": ["string", "null"]},
        "kind": {"type": "string", "enum": ["duty", "backup"]},
        "ring_position": {"type": "integer"}, "staff_no": {"type": "string"},
        "doctor": {"type": "string"}, "swapped_from": {"type": ["string", "null"]},
    },
}
GAP = {"type": "object", "required": ["center_id", "center", "starts_at", "ends_at", "why"],
       "properties": {"center_id": {"type": "integer"}, "center": {"type": "string"},
                      "starts_at": {"type": "string", "format": "date-time"},
                      "ends_at": {"type": "string", "format": "date-time"}, "why": {"type": "string"}}}
ROSTER = {"type": "object", "required": ["month", "shifts", "gaps"],
          "properties": {"month": {"type": "string"}, "shifts": {"type": "array", "items": SHIFT},
                         "gaps": {"type": "array", "items": GAP}}}
SWAP_BODY = {"type": "object", "required": ["staff_no"], "additionalProperties": False,
             "properties": {"staff_no": {"type": "string", "maxLength": 32}}}


def _month(request: web.Request) -> date:
    raw = request.query.get("month", "")
    if not raw:
        return console(request).now().astimezone(console(request).tz).date().replace(day=1)
    try:
        first = datetime.strptime(raw, "%Y-%m").date() if len(raw) == 7 else None
    except ValueError:
        first = None
    if first is None or not 2000 <= first.year <= 2100:
        raise problem(422, "bad_month", f"月份格式应为 YYYY-MM：{raw[:20]}")
    return first


async def _roster(request: web.Request, first: date) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    c, who = console(request), viewer(request)
    start = datetime.combine(first, datetime.min.time(), c.tz)
    days = gregorian.monthrange(first.year, first.month)[1]
    end = start + timedelta(days=days)
    async with c.pool.acquire() as conn:
        rows = await shifts_between(conn, start, end, who.district_id)
        cal = await load_calendar(conn, tz=c.tz, day_start=DEFAULT_DAY_START, day_end=DEFAULT_DAY_END)  # type: ignore[arg-type]
        gaps = await gaps_between(conn, cal, start, end, who.district_id, rows)
    shifts = [{"id": r["shift_id"], "starts_at": r["starts_at"].astimezone(c.tz),
               "ends_at": r["ends_at"].astimezone(c.tz), "center_id": r["shift_center"],
               "center": r["center"], "kind": r["kind"], "ring_position": r["ring_position"],
               "staff_no": r["staff_no"], "doctor": r["name"], "swapped_from": r["swapped_from"]}
              for r in rows]
    return shifts, [{"center_id": g.center_id, "center": g.center, "starts_at": g.starts_at.astimezone(c.tz),
                     "ends_at": g.ends_at.astimezone(c.tz), "why": g.why} for g in gaps]


async def _swap(request: web.Request, shift_id: int, taker_no: str) -> dict[str, Any]:
    c, who = console(request), viewer(request)
    taker_no = _text(taker_no, "接班医生工号", required=True, limit=32)
    async with c.pool.acquire() as conn, conn.transaction():
        try:
            done = await swap_shift(conn, shift_id, taker_no, tz=c.tz, district_id=who.district_id)
        except RosterNotFound:  # its message names the shift or 工号 asked for
            raise problem(404, "no_such_shift", "找不到这个班次或接班医生") from None
        except RosterConflict as exc:
            raise problem(409, "overlapping_shift", f"换班冲突，该医生同一时间已有班次：{exc}") from None
        except RosterError as exc:
            raise problem(422, "invalid_swap", f"不能换班：{exc}") from None
        await _audit(conn, request, "admin.shift_swapped", f"shift:{shift_id}",
                     f"staff:{done.giver_no} -> staff:{done.taker_no}")
    log.info("web.admin.shift_swapped", shift_id=shift_id, giver=done.giver_no, taker=done.taker_no)
    return {"id": shift_id, "staff_no": done.taker_no, "doctor": done.taker}


@PLUGIN.api("GET", "/api/v1/admin/roster", capability=CAP, summary="a month of the duty roster, with its gaps",
            response=ROSTER, parameters=[query_param("month", {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"})])
async def api_roster(request: web.Request) -> web.StreamResponse:
    first = _month(request)
    shifts, gaps = await _roster(request, first)
    return json_response({"month": f"{first:%Y-%m}", "shifts": shifts, "gaps": gaps})


@PLUGIN.api("PUT", "/api/v1/admin/roster/shifts/{shift_id}/doctor", capability=CAP, writes=True,
            summary="give a shift to another doctor (换班)", request_body=SWAP_BODY,
            parameters=[path_param("shift_id")],
            response={"type": "object", "required": ["id", "staff_no", "doctor"],
                      "properties": {"id": {"type": "integer"}, "staff_no": {"type": "string"},
                                     "doctor": {"type": "string"}}})
async def api_swap(request: web.Request) -> web.StreamResponse:
    shift_id = int_param(request, "shift_id")
    body = await _json_body(request)
    return json_response(await _swap(request, shift_id, body.get("staff_no")))


@PLUGIN.page("GET", "/admin/roster", capability=CAP)
async def roster_page(request: web.Request) -> web.StreamResponse:
    first = _month(request)
    shifts, gaps = await _roster(request, first)
    days = [first + timedelta(days=i) for i in range(gregorian.monthrange(first.year, first.month)[1])]
    by_day: dict[date, list[dict[str, Any]]] = {d: [] for d in days}
    for s in shifts:
        by_day.setdefault(s["starts_at"].date(), []).append(s)
    previous = (first - timedelta(days=1)).replace(day=1)
    following = first + timedelta(days=len(days))
    async with console(request).pool.acquire() as conn:
        doctors = await conn.fetch(
            "SELECT staff_no, name FROM staff WHERE district_id = $1"
            " AND role IN ('night_doctor', 'family_doctor') AND left_on IS NULL ORDER BY staff_no",
            viewer(request).district_id)
    return render(request, "admin/roster.html", month=first, days=days, by_day=by_day, gaps=gaps,
                  previous=previous, following=following, doctors=doctors)


@PLUGIN.page("POST", "/admin/roster/shifts/{shift_id}", capability=CAP, writes=True)
async def roster_swap(request: web.Request) -> web.StreamResponse:
    shift_id = int_param(request, "shift_id")
    form = await _form(request)
    await _swap(request, shift_id, form.get("staff_no", ""))
    month = form.get("month", "")
    raise _back(f"/admin/roster?month={month}" if len(month) == 7 and month[4] == "-" and
                month.replace("-", "").isdigit() else "/admin/roster")


# -- hotline lines -----------------------------------------------------------------------------------

LINE = {"type": "object",
        "required": ["number", "district_id", "district", "center_id", "center", "label", "greeting"],
        "properties": {"number": {"type": "string"}, "district_id": {"type": "integer"},
                       "district": {"type": "string"}, "center_id": {"type": ["integer", "null"]},
                       "center": {"type": ["string", "null"]}, "label": {"type": "string"},
                       "greeting": {"type": "boolean"}}}
LINES = {"type": "object", "required": ["lines"],
         "properties": {"lines": {"type": "array", "items": LINE}}}
LINE_BODY = {"type": "object", "required": ["number"], "additionalProperties": False,
             "properties": {"number": {"type": "string", "maxLength": 32},
                            "center_id": {"type": ["integer", "null"], "minimum": 1},
                            "label": {"type": "string", "maxLength": MAX_TEXT}}}
_NUMBER_PARAM = path_param("number", {"type": "string", "pattern": "^[0-9A-Za-z_.+-]{1,32}$"})


async def _add_line(request: web.Request, given: dict[str, Any]) -> None:
    number = _text(given.get("number"), "号码", required=True, limit=32)
    label = _text(given.get("label"), "说明")
    center_id = _optional_id(given.get("center_id"), "中心")
    who = viewer(request)
    async with console(request).pool.acquire() as conn, conn.transaction():
        try:
            place = await place_in_district(conn, who.district_id, center_id)
            await add_line(conn, number, place, label=label)
        except CalendarNotFound:
            raise problem(422, "no_such_center", "本区没有这个中心") from None
        except LineError as exc:
            raise problem(422, "invalid_line", f"不能添加热线号码：{exc}") from None
        await _audit(conn, request, "admin.line_added", f"line:{number}",
                     f"{place.center or place.district}" + (f"; {label}" if label else ""))


async def _remove_line(request: web.Request, number: str) -> None:
    async with console(request).pool.acquire() as conn, conn.transaction():
        try:
            await remove_line(conn, number, viewer(request).district_id)
        except LineNotFound:
            raise problem(404, "no_such_line", "没有这个热线号码") from None
        await _audit(conn, request, "admin.line_removed", f"line:{number}")


@PLUGIN.api("GET", "/api/v1/admin/lines", capability=CAP, summary="hotline numbers of the district",
            response=LINES)
async def api_lines(request: web.Request) -> web.StreamResponse:
    async with console(request).pool.acquire() as conn:
        rows = await list_lines(conn, viewer(request).district_id)
    return json_response({"lines": [r.as_json() for r in rows]})


@PLUGIN.api("POST", "/api/v1/admin/lines", capability=CAP, writes=True, summary="add a hotline number",
            request_body=LINE_BODY, response=LINES)
async def api_line_add(request: web.Request) -> web.StreamResponse:
    await _add_line(request, await _json_body(request))
    return await api_lines(request)


@PLUGIN.api("DELETE", "/api/v1/admin/lines/{number}", capability=CAP, writes=True,
            summary="stop answering a number specially", parameters=[_NUMBER_PARAM], response=LINES)
async def api_line_remove(request: web.Request) -> web.StreamResponse:
    await _remove_line(request, request.match_info["number"])
    return await api_lines(request)


@PLUGIN.page("GET", "/admin/lines", capability=CAP)
async def lines_page(request: web.Request) -> web.StreamResponse:
    async with console(request).pool.acquire() as conn:
        rows = await list_lines(conn, viewer(request).district_id)
        centers, _ = await district_places(conn, viewer(request).district_id)
    return render(request, "admin/lines.html", lines=rows, centers=centers)


@PLUGIN.page("POST", "/admin/lines", capability=CAP, writes=True)
async def lines_add(request: web.Request) -> web.StreamResponse:
    await _add_line(request, await _form(request))
    raise _back("/admin/lines")


@PLUGIN.page("POST", "/admin/lines/{number}/remove", capability=CAP, writes=True)
async def lines_remove(request: web.Request) -> web.StreamResponse:
    await _remove_line(request, request.match_info["number"])
    raise _back("/admin/lines")


# -- prompts -----------------------------------------------------------------------------------------

PROMPT = {"type": "object", "required": ["name", "text", "custom", "source_name", "set_by", "set_at"],
          "properties": {"name": {"type": "string"}, "text": {"type": "string"},
                         "custom": {"type": "boolean"}, "source_name": {"type": ["string", "null"]},
                         "set_by": {"type": ["string", "null"]},
                         "set_at": {"type": ["string", "null"], "format": "date-time"}}}
PROMPTS = {"type": "object", "required": ["prompts"],
           "properties": {"prompts": {"type": "array", "items": PROMPT}}}
_PROMPT_PARAM = path_param("name", {"type": "string", "enum": list(PROMPT_NAMES)})


def _prompt_json(name: str, spoken: dict[str, str], custom: Override | None) -> dict[str, Any]:
    return {"name": name, "text": spoken.get(name, ""), "custom": custom is not None,
            "source_name": custom.source_name if custom else None,
            "set_by": custom.set_by if custom else None, "set_at": custom.set_at if custom else None}


async def _prompts(request: web.Request) -> list[dict[str, Any]]:
    async with console(request).pool.acquire() as conn:
        custom = await overrides(conn)
    spoken = prompt_texts()
    return [_prompt_json(n, spoken, custom.get(n)) for n in PROMPT_NAMES]


def _upload_name(raw: str | None) -> str:
    """The uploaded file's name as its owner saw it (kept for the list, never used as a path).
    Browsers send UTF-8 as is; some clients percent-encode it."""
    name = raw or "upload"
    if name.isascii() and "%" in name:
        try:
            name = unquote(name, errors="strict")
        except UnicodeDecodeError:
            pass
    return "".join(ch for ch in name if ord(ch) >= 32)[:100] or "upload"


async def _receive_upload(request: web.Request, folder: Path) -> tuple[Path, str]:
    """The multipart field `file` streamed to a file in `folder`, refused past MAX_PROMPT_UPLOAD
    as soon as it gets there (the rest is never read)."""
    if request.content_type != "multipart/form-data":
        raise problem(415, "multipart_expected", "请以 multipart/form-data 上传文件（字段名 file）")
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if getattr(part, "name", None) != "file":
                continue  # not read: a field we do not want is skipped by the next part's seek
            filename = _upload_name(getattr(part, "filename", None))
            target, size = folder / "upload", 0
            with target.open("wb") as out:
                while chunk := await part.read_chunk(CHUNK):  # type: ignore[union-attr]
                    size += len(chunk)
                    if size > MAX_PROMPT_UPLOAD:
                        raise problem(413, "too_large",
                                      f"上传内容过大（不能超过 {MAX_PROMPT_UPLOAD // (1024 * 1024)} MB）")
                    out.write(chunk)
            if size == 0:
                raise problem(422, "empty_upload", "上传的文件是空的")
            return target, filename
    except (ValueError, AssertionError, LookupError, RuntimeError):  # a malformed multipart body
        raise problem(400, "bad_upload", "上传内容格式不正确") from None
    raise problem(422, "no_file", "请选择要上传的录音文件（字段名 file）")


@PLUGIN.api("GET", "/api/v1/admin/prompts", capability=CAP, summary="the hotline's prompts, default or the district's own",
            response=PROMPTS)
async def api_prompts(request: web.Request) -> web.StreamResponse:
    return json_response({"prompts": await _prompts(request)})


@PLUGIN.api("PUT", "/api/v1/admin/prompts/{name}", capability=CAP, writes=True,
            summary="upload a recording for a prompt (multipart field `file`, any audio format; at most 20 MB)",
            parameters=[_PROMPT_PARAM], response=PROMPT, max_body=MAX_PROMPT_UPLOAD + 64 * 1024)
async def api_prompt_upload(request: web.Request) -> web.StreamResponse:
    name = _prompt_name(request)
    with tempfile.TemporaryDirectory(prefix="jy-prompt-") as folder:
        source, filename = await _receive_upload(request, Path(folder))
        async with console(request).pool.acquire() as conn, conn.transaction():
            try:
                sha = await set_override(conn, name, source, source_name=filename,
                                         actor=viewer(request).actor)
            except PromptRefused as exc:
                raise problem(415, "not_audio", f"无法作为提示音使用，请上传音频文件（如 WAV、MP3）：{exc}") from None
            await _audit(conn, request, "admin.prompt_uploaded", f"prompt:{name}", f"sha256 {sha}; {filename}")
            custom = (await overrides(conn)).get(name)
    log.info("web.admin.prompt_uploaded", prompt=name)
    return json_response(_prompt_json(name, prompt_texts(), custom))


@PLUGIN.api("GET", "/api/v1/admin/prompts/{name}/audio", capability=CAP, summary="hear a prompt (WAV)",
            parameters=[_PROMPT_PARAM], content_type="audio/wav",
            response={"type": "string", "contentMediaType": "audio/wav"})
async def api_prompt_audio(request: web.Request) -> web.StreamResponse:
    name = _prompt_name(request)
    async with console(request).pool.acquire() as conn:
        wav = await prompt_audio(conn, name)
    return web.Response(body=wav, content_type="audio/wav",
                        headers={"Content-Disposition": f'inline; filename="{name}.wav"'})


async def _restore(request: web.Request, name: str) -> None:
    async with console(request).pool.acquire() as conn, conn.transaction():
        if not await restore_default(conn, name):
            raise problem(404, "no_custom_prompt", "这个提示音已经是默认录音")
        await _audit(conn, request, "admin.prompt_restored", f"prompt:{name}")


@PLUGIN.api("DELETE", "/api/v1/admin/prompts/{name}", capability=CAP, writes=True,
            summary="restore the default recording of a prompt", parameters=[_PROMPT_PARAM], response=PROMPT)
async def api_prompt_restore(request: web.Request) -> web.StreamResponse:
    name = _prompt_name(request)
    await _restore(request, name)
    return json_response(_prompt_json(name, prompt_texts(), None))


@PLUGIN.page("GET", "/admin/prompts", capability=CAP)
async def prompts_page(request: web.Request) -> web.StreamResponse:
    return render(request, "admin/prompts.html", prompts=await _prompts(request),
                  max_mb=MAX_PROMPT_UPLOAD // (1024 * 1024))


@PLUGIN.page("POST", "/admin/prompts/{name}/restore", capability=CAP, writes=True)
async def prompts_restore(request: web.Request) -> web.StreamResponse:
    await _restore(request, _prompt_name(request))
    raise _back("/admin/prompts")


# -- calendar closures -------------------------------------------------------------------------------

CLOSURE = {"type": "object", "required": ["date", "center_id", "place", "reason", "by"],
           "properties": {"date": {"type": "string", "format": "date"},
                          "center_id": {"type": ["integer", "null"]}, "place": {"type": "string"},
                          "reason": {"type": "string"}, "by": {"type": "string"}}}
CLOSURES = {"type": "object", "required": ["year", "closures"],
            "properties": {"year": {"type": "integer"},
                           "closures": {"type": "array", "items": CLOSURE}}}
CLOSE_BODY = {"type": "object", "required": ["date", "reason"], "additionalProperties": False,
              "properties": {"date": {"type": "string", "format": "date"},
                             "center_id": {"type": ["integer", "null"], "minimum": 1},
                             "reason": {"type": "string", "maxLength": MAX_TEXT}}}


def _year(request: web.Request) -> int:
    raw = request.query.get("year", "")
    if not raw:
        c = console(request)
        return c.now().astimezone(c.tz).year
    if not raw.isascii() or not raw.isdigit() or not 2000 <= int(raw) <= 2100:
        raise problem(422, "bad_year", "年份应为 2000–2100")
    return int(raw)


async def _closures(request: web.Request, year: int) -> list[dict[str, Any]]:
    async with console(request).pool.acquire() as conn:
        rows = await district_closures(conn, viewer(request).district_id, date(year, 1, 1), date(year, 12, 31))
    return [{"date": r.on, "center_id": r.center_id, "place": r.place, "reason": r.reason, "by": r.by}
            for r in rows]


async def _close(request: web.Request, given: dict[str, Any]) -> date:
    on = _date(given.get("date"))
    reason = _text(given.get("reason"), "关闭原因", required=True)
    center_id = _optional_id(given.get("center_id"), "中心")
    who = viewer(request)
    async with console(request).pool.acquire() as conn, conn.transaction():
        try:
            place = await place_in_district(conn, who.district_id, center_id)
            earlier = await close_day(conn, on, reason, place, actor=who.actor)
        except CalendarNotFound:
            raise problem(422, "no_such_center", "本区没有这个中心") from None
        except CalendarError as exc:
            raise problem(422, "invalid_closure", str(exc)) from None
        await _audit(conn, request, "admin.day_closed", f"closure:{center_id or 'district'}:{on}",
                     reason + (f" (was: {earlier})" if earlier else ""))
    return on


async def _reopen(request: web.Request, given: dict[str, Any]) -> date:
    on = _date(given.get("date"))
    center_id = _optional_id(given.get("center_id"), "中心")
    who = viewer(request)
    async with console(request).pool.acquire() as conn, conn.transaction():
        try:
            place = await place_in_district(conn, who.district_id, center_id)
            reason = await reopen_day(conn, on, place)
        except CalendarNotFound:
            raise problem(404, "no_such_closure", "没有这项关闭") from None
        await _audit(conn, request, "admin.day_reopened", f"closure:{center_id or 'district'}:{on}",
                     f"was: {reason}")
    return on


@PLUGIN.api("GET", "/api/v1/admin/closures", capability=CAP, summary="closures of the district and its centers",
            response=CLOSURES, parameters=[query_param("year", {"type": "integer", "minimum": 2000, "maximum": 2100})])
async def api_closures(request: web.Request) -> web.StreamResponse:
    year = _year(request)
    return json_response({"year": year, "closures": await _closures(request, year)})


@PLUGIN.api("POST", "/api/v1/admin/closures", capability=CAP, writes=True,
            summary="close the district or a center on a date", request_body=CLOSE_BODY, response=CLOSURES)
async def api_close(request: web.Request) -> web.StreamResponse:
    on = await _close(request, await _json_body(request))
    return json_response({"year": on.year, "closures": await _closures(request, on.year)})


@PLUGIN.api("DELETE", "/api/v1/admin/closures", capability=CAP, writes=True, summary="reopen a closed day",
            parameters=[query_param("date", {"type": "string", "format": "date"}, required=True),
                        query_param("center_id", {"type": "integer", "minimum": 1})],
            response=CLOSURES)
async def api_reopen(request: web.Request) -> web.StreamResponse:
    on = await _reopen(request, dict(request.query))
    return json_response({"year": on.year, "closures": await _closures(request, on.year)})


@PLUGIN.page("GET", "/admin/calendar", capability=CAP)
async def calendar_page(request: web.Request) -> web.StreamResponse:
    year = _year(request)
    async with console(request).pool.acquire() as conn:
        centers, _ = await district_places(conn, viewer(request).district_id)
    return render(request, "admin/calendar.html", year=year, closures=await _closures(request, year),
                  centers=centers)


@PLUGIN.page("POST", "/admin/calendar/close", capability=CAP, writes=True)
async def calendar_close(request: web.Request) -> web.StreamResponse:
    on = await _close(request, await _form(request))
    raise _back(f"/admin/calendar?year={on.year}")


@PLUGIN.page("POST", "/admin/calendar/reopen", capability=CAP, writes=True)
async def calendar_reopen(request: web.Request) -> web.StreamResponse:
    on = await _reopen(request, await _form(request))
    raise _back(f"/admin/calendar?year={on.year}")

