"""Signing in and out, and setting one's password (web/accounts.py keeps the rules)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from routing.scope import CAPABILITIES, Scope
from web.accounts import PasswordRejected, WrongPassword
from web.app import (
    VIEWER,
    clear_session_cookie,
    console,
    json_response,
    login_csrf_token,
    render,
    session,
    set_login_csrf,
    set_session_cookie,
    viewer,
)
from web.registry import PUBLIC, SIGNED_IN, Plugin

log = structlog.get_logger("web.auth")

PLUGIN = Plugin("auth", templates=str(Path(__file__).parent / "templates"))
ROLE_NAMES = {
    "family_doctor": "家庭医生", "assistant": "医生助理", "nurse": "护士", "night_doctor": "夜间值班医生",
    "agent": "客服坐席", "supervisor": "区质控", "director": "中心主任", "district_admin": "区管理员",
}


def _safe_next(target: str | None) -> str:
    """Only a path of this console: never another site (//evil, /\\evil, https://…)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(ch) < 32 for ch in target):
        return "/"
    return target


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


@PLUGIN.page("GET", "/login", capability=PUBLIC)
async def login_form(request: web.Request) -> web.StreamResponse:
    if request.get(VIEWER) is not None:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
    token = login_csrf_token(request)
    response = render(request, "auth/login.html", login_csrf=token,
                      next=_safe_next(request.query.get("next")), error=None, staff_no="")
    set_login_csrf(request, response, token)
    return response


@PLUGIN.page("POST", "/login", capability=PUBLIC, writes=True)
async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    staff_no = str(form.get("staff_no", ""))[:32].strip()
    password = str(form.get("password", ""))[:256]
    target = _safe_next(str(form.get("next", "")))
    c = console(request)
    result = await c.accounts.sign_in(staff_no, password, _address(request), c.now())
    if result.status in ("ok", "must_change"):
        old = session(request)
        if old is not None:
            await c.sessions.end(old)
        token, _ = await c.sessions.create(result.staff_id, must_change=result.status == "must_change")
        response = web.HTTPSeeOther("/password" if result.status == "must_change" else target)
        set_session_cookie(request, response, token)
        log.info("web.signed_in", staff_id=result.staff_id, must_change=result.status == "must_change")
        raise response
    if result.status == "locked":
        error, status = "登录失败次数过多，账号已暂时锁定，请15分钟后再试", 429
    else:
        error, status = "工号或密码错误", 401
    log.info("web.sign_in_refused", status=result.status)
    token = login_csrf_token(request)
    response = render(request, "auth/login.html", status=status, login_csrf=token,
                      next=target, error=error, staff_no=staff_no)
    set_login_csrf(request, response, token)
    return response


@PLUGIN.page("POST", "/logout", capability=SIGNED_IN, writes=True)
async def logout(request: web.Request) -> web.StreamResponse:
    current = session(request)
    if current is not None:
        await console(request).sessions.end(current)
    response = web.HTTPSeeOther("/login")
    clear_session_cookie(response)
    raise response


@PLUGIN.page("GET", "/password", capability=SIGNED_IN)
async def password_form(request: web.Request) -> web.StreamResponse:
    current = session(request)
    return render(request, "auth/password.html", error=None,
                  forced=bool(current and current.must_change))


@PLUGIN.page("POST", "/password", capability=SIGNED_IN, writes=True)
async def password_change(request: web.Request) -> web.StreamResponse:
    c, who, current = console(request), viewer(request), session(request)
    assert current is not None
    form = await request.post()
    old = str(form.get("old_password", ""))[:256]
    new, again = str(form.get("new_password", ""))[:256], str(form.get("new_password_again", ""))[:256]
    forced = current.must_change
    error = None
    if new != again:
        error = "两次输入的新密码不一致"
    else:
        try:
            if forced:
                await c.accounts.set_password(who.staff_id, new, actor=who.actor)
            else:
                await c.accounts.change_password(who.staff_id, old, new, actor=who.actor)
        except WrongPassword:
            error = "原密码不正确"
        except PasswordRejected as exc:
            error = str(exc)
    if error:
        return render(request, "auth/password.html", status=422, error=error, forced=forced)
    # Every other session of this person ends; this one continues under a fresh token.
    await c.sessions.end_all(who.staff_id, keep=current)
    token, _ = await c.sessions.replace(current)
    response = web.HTTPSeeOther("/")
    set_session_cookie(request, response, token)
    raise response


@PLUGIN.page("GET", "/", capability=SIGNED_IN)
async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/desk" if Scope(viewer(request)).can("desk") else "/calls")


ME = {
    "type": "object",
    "required": ["staff_id", "staff_no", "name", "role", "role_name", "capabilities"],
    "properties": {
        "staff_id": {"type": "integer"},
        "staff_no": {"type": "string"},
        "name": {"type": "string"},
        "role": {"type": "string", "enum": list(ROLE_NAMES)},
        "role_name": {"type": "string"},
        "district_id": {"type": "integer"},
        "center_id": {"type": ["integer", "null"]},
        "team_id": {"type": ["integer", "null"]},
        "capabilities": {"type": "array", "items": {"type": "string"}},
    },
}


@PLUGIN.api("GET", "/api/v1/me", capability=SIGNED_IN, summary="who is signed in, and what they may do",
            response=ME)
async def me(request: web.Request) -> web.StreamResponse:
    who = viewer(request)
    allowed = Scope(who)
    return json_response({
        "staff_id": who.staff_id, "staff_no": who.staff_no, "name": who.name, "role": who.role,
        "role_name": ROLE_NAMES[who.role], "district_id": who.district_id,
        "center_id": who.center_id, "team_id": who.team_id,
        "capabilities": sorted(cap for cap in CAPABILITIES if allowed.can(cap)),
    })
