"""The console's aiohttp application: middlewares, the route guard, templates, static files.

Requests pass, outermost first: `security_headers` (CSP with no inline script,
frame-ancestors 'none', no caching of medical data, on every answer, errors too), `errors` (every
error a page or JSON without internals), `authenticate` (the session cookie → the signed-in
viewer). Each route's handler is wrapped
by `guard`, which enforces what the route declared (web/registry.py): signed in, the role's
capability, CSRF and the Origin on every write, no writes for read-only roles.
"""

from __future__ import annotations

import hmac
import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import jinja2
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from routing.presence import Presence
from routing.reason_zh import DIAL_OUTCOMES_ZH, DISPOSITIONS_ZH, STEP_TITLES_ZH, reason_zh
from routing.scope import READ_ONLY_WRITES, Scope, Viewer
from store.pii import PiiVault
from web.registry import PUBLIC, SIGNED_IN, Handler, Plugin, Route
from web.sessions import Session, SessionStore

log = structlog.get_logger("web")

HERE = Path(__file__).parent
SESSION_COOKIE = "jy_session"
LOGIN_CSRF_COOKIE = "jy_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
# A form or JSON body larger than this is refused before it is read (prompt uploads declare
# their own, larger limit when they arrive).
MAX_BODY = 1024 * 1024

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")


@dataclass
class Console:
    """What the console's handlers share: the stores, and the services of the slices."""

    pool: asyncpg.Pool
    redis: aioredis.Redis
    vault: PiiVault
    tz: tzinfo
    now: Callable[[], datetime]
    sessions: SessionStore
    accounts: Any            # web.accounts.Accounts
    presence: Presence
    secure_cookie: bool = False
    area_code: str = "022"
    redis_url: str | None = None  # for connections of their own (the live feed's pub/sub)
    plugins: tuple[Plugin, ...] = ()
    # Anything a plugin keeps for the app's lifetime (its service objects, a live feed …).
    extras: dict[str, Any] = field(default_factory=dict)


CONSOLE: web.AppKey[Console] = web.AppKey("console", Console)
# What `authenticate` found for a request: the signed-in person and her session.
VIEWER: web.RequestKey[Viewer] = web.RequestKey("viewer", Viewer)
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)


# -- request helpers, for handlers -------------------------------------------------------------

def console(request: web.Request) -> Console:
    return request.app[CONSOLE]


def viewer(request: web.Request) -> Viewer:
    found: Viewer | None = request.get(VIEWER)
    if found is None:  # the guard lets no handler run without one unless the route is public
        raise web.HTTPUnauthorized()
    return found


def scope(request: web.Request) -> Scope:
    return Scope(viewer(request))


def session(request: web.Request) -> Session | None:
    return request.get(SESSION)


def int_param(request: web.Request, name: str) -> int:
    """A path parameter that names an object by id: anything but a positive integer is 404
    (an id that is a path, a quote or a script names nothing)."""
    raw = request.match_info.get(name, "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) < 1:
        raise web.HTTPNotFound()
    return int(raw)


async def request_json(request: web.Request) -> Any:
    """The JSON body of a request; 415 when it is not declared JSON, 400 when it does not parse."""
    if request.content_type != "application/json":
        raise problem(415, "json_expected", "请求体必须是 JSON")
    try:
        return await request.json()
    except ValueError:
        raise problem(400, "bad_json", "请求体不是有效的 JSON") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(data, default=_json_default, ensure_ascii=False),
                        status=status, content_type="application/json", headers=headers)


def render(request: web.Request, template: str, *, status: int = 200, **values: Any) -> web.Response:
    env = request.app[TEMPLATES]
    who: Viewer | None = request.get(VIEWER)
    current = session(request)
    nav = []
    if who is not None and not (current and current.must_change):
        allowed = Scope(who)
        nav = sorted((item for plugin in console(request).plugins for item in plugin.nav
                      if allowed.can(item.capability)), key=lambda item: (item.order, item.path))
    screen_pop = who is not None and Scope(who).can("screen_pop") and not (current and current.must_change)
    html = env.get_template(template).render(
        viewer=who, csrf_token=current.csrf if current else "", nav=nav, path=request.path,
        screen_pop=screen_pop, server_time=console(request).now().isoformat(), **values)
    return web.Response(text=html, status=status, content_type="text/html")


def problem(status: int, code: str, message: str) -> web.HTTPException:
    """An HTTP error whose body the errors middleware writes (JSON for the API, a page else)."""
    cls = web.HTTPException
    for candidate in (web.HTTPBadRequest, web.HTTPUnauthorized, web.HTTPForbidden, web.HTTPNotFound,
                      web.HTTPConflict, web.HTTPRequestEntityTooLarge, web.HTTPUnsupportedMediaType,
                      web.HTTPUnprocessableEntity, web.HTTPTooManyRequests):
        if candidate.status_code == status:
            cls = candidate
    if cls is web.HTTPRequestEntityTooLarge:  # it alone asks for the sizes; the message says them
        exc: web.HTTPException = web.HTTPRequestEntityTooLarge(max_size=0, actual_size=0, text="")
    else:
        exc = cls(reason=None)
    exc.problem_code = code  # type: ignore[attr-defined]
    exc.problem_message = message  # type: ignore[attr-defined]
    return exc


# -- middlewares -------------------------------------------------------------------------------

_MESSAGES = {
    400: ("bad_request", "请求无效"),
    401: ("sign_in_required", "请先登录"),
    403: ("forbidden", "没有权限"),
    404: ("not_found", "未找到"),
    405: ("method_not_allowed", "不支持的请求方式"),
    409: ("conflict", "数据已被他人修改，请刷新后重试"),
    413: ("too_large", "上传内容过大"),
    415: ("unsupported_media_type", "不支持的文件格式"),
    422: ("invalid", "输入有误"),
    429: ("too_many_requests", "请求过于频繁，请稍后再试"),
    500: ("internal_error", "服务器内部错误"),
    503: ("unavailable", "服务暂不可用，请稍后再试"),
}


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _error_response(request: web.Request, status: int, code: str | None, message: str | None,
                    *, reference: str | None = None, headers: Any = None) -> web.Response:
    default_code, default_message = _MESSAGES.get(status, ("error", "请求失败"))
    code, message = code or default_code, message or default_message
    keep = {k: v for k, v in (headers or {}).items() if k in ("Location", "Retry-After", "Allow")}
    if _is_api(request):
        body: dict[str, Any] = {"error": code, "message": message}
        if reference:
            body["reference"] = reference
        return json_response(body, status=status, headers=keep)
    try:
        response = render(request, "error.html", status=status, code=code, message=message,
                          reference=reference)
    except Exception:  # a broken template must not hide the error behind another
        response = web.Response(text=f"{status} {message}", status=status, content_type="text/plain")
    response.headers.update(keep)
    return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status_code < 400:  # redirects pass through
            raise
        return _error_response(request, exc.status_code, getattr(exc, "problem_code", None),
                               getattr(exc, "problem_message", None), headers=exc.headers)
    except (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError):
        return _error_response(request, 400, "bad_request", "请求含有无法保存的字符")
    except RedisError:  # sessions and presence live there: nothing can be decided without it
        log.warning("web.redis_unavailable", path=request.path)
        return _error_response(request, 503, None, None)
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.ConnectionDoesNotExistError,
            asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError):
        log.exception("web.store_unavailable", path=request.path)
        return _error_response(request, 503, None, None)
    except Exception:
        reference = uuid.uuid4().hex[:12]
        log.exception("web.unhandled", path=request.path, method=request.method, reference=reference)
        return _error_response(request, 500, None, None, reference=reference)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(exc.headers, request)
        raise
    _secure(response.headers, request)
    return response


def _secure(headers: Any, request: web.Request) -> None:
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    # same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` with the
    # console's own form posts, which the Origin check must refuse. Other sites get no referrer.
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        c = console(request)
        current = await c.sessions.load(token)
        if current is not None:
            who = await c.accounts.viewer(current.staff_id)
            if who is None:  # left the service, or the row is gone: the session is over
                await c.sessions.end(current)
            else:
                request[SESSION], request[VIEWER] = current, who
    return await handler(request)


# -- the guard around every route ----------------------------------------------------------------

def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None  # a sandboxed or privacy-stripped origin is not ours
    return origin == f"{request.scheme}://{request.host}"


async def _csrf_ok(request: web.Request, expected: str, *, read_form: bool = True) -> bool:
    given = request.headers.get(CSRF_HEADER, "")
    if not given and read_form and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        value = form.get(CSRF_FIELD, "")
        given = value if isinstance(value, str) else ""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def guard(route: Route) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        if any("\x00" in key or "\x00" in value for key, value in request.query.items()):
            # no text field of ours holds a NUL (PostgreSQL text cannot): refused before anything
            raise problem(400, "bad_request", "请求参数含有非法字符")
        who: Viewer | None = request.get(VIEWER)
        current = session(request)
        if route.capability != PUBLIC:
            if who is None:
                if route.api:
                    raise web.HTTPUnauthorized()
                target = request.path_qs if request.method == "GET" else "/"
                raise web.HTTPSeeOther(f"/login?next={quote(target, safe='/?=&')}")
            if current is not None and current.must_change and route.path not in ("/password", "/logout"):
                if route.api:
                    raise problem(403, "password_change_required", "请先设置新密码")
                raise web.HTTPSeeOther("/password")
            if route.capability != SIGNED_IN and not Scope(who).can(route.capability):
                raise web.HTTPForbidden()
        if route.max_body is not None and (request.content_length or 0) > route.max_body:
            raise problem(413, "too_large",
                          f"上传内容过大（不能超过 {route.max_body // (1024 * 1024)} MB）")
        if route.writes:
            if not _same_origin(request):
                raise problem(403, "cross_origin", "跨站请求被拒绝")
            expected = current.csrf if current else request.cookies.get(LOGIN_CSRF_COOKIE, "")
            if not await _csrf_ok(request, expected, read_form=route.max_body is None):
                raise problem(403, "csrf", "页面已过期，请刷新后重试")
            if who is not None and Scope(who).read_only and route.capability != SIGNED_IN \
                    and route.capability not in READ_ONLY_WRITES:
                raise problem(403, "read_only", "只读账号不能修改数据")
        return await route.handler(request)
    guarded.__name__ = route.handler.__name__
    return guarded


def login_csrf_token(request: web.Request) -> str:
    """The double-submit token of the sign-in form (there is no session yet to hold one):
    the browser's own, or a new one for `set_login_csrf` to give it."""
    return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)


def set_login_csrf(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict",
                        secure=console(request).secure_cookie, path="/login")


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax",
                        secure=console(request).secure_cookie, path="/")


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/")


# -- the application ------------------------------------------------------------------------------

def _templates(plugins: Iterable[Plugin], tz: tzinfo) -> jinja2.Environment:
    folders = [str(HERE / "templates")] + [p.templates for p in plugins if p.templates]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folders), autoescape=True,
                             undefined=jinja2.StrictUndefined)

    def local(value: datetime | None, fmt: str = "%m-%d %H:%M") -> str:
        """An instant as the district reads it (Asia/Shanghai), whatever zone it came in."""
        return "" if value is None else value.astimezone(tz).strftime(fmt)

    def iso(value: datetime | None) -> str:
        return "" if value is None else value.isoformat()

    env.filters["local"] = local
    env.filters["iso"] = iso
    # routing explains itself in English (logs, CLI); staff read the console in Chinese
    env.filters["reason_zh"] = reason_zh
    env.filters["step_zh"] = lambda step: STEP_TITLES_ZH.get(step, step)
    env.filters["dial_outcome_zh"] = lambda outcome: DIAL_OUTCOMES_ZH.get(outcome, outcome or "")
    env.filters["disposition_zh"] = lambda d: DISPOSITIONS_ZH.get(d, d or "")
    return env


def create_app(ctx: Console, *, on_cleanup: Iterable[Callable[[web.Application], Awaitable[None]]] = ()
               ) -> web.Application:
    from web import openapi
    from web.plugins import PLUGINS

    ctx.plugins = PLUGINS
    app = web.Application(middlewares=[security_headers, errors, authenticate],
                          client_max_size=MAX_BODY, handler_args={"max_field_size": 8190})
    app[CONSOLE] = ctx
    app[TEMPLATES] = _templates(PLUGINS, ctx.tz)
    seen: set[tuple[str, str]] = set()
    for plugin in PLUGINS:
        for route in plugin.routes:
            if (route.method, route.path) in seen:
                raise ValueError(f"route declared twice: {route.method} {route.path}")
            seen.add((route.method, route.path))
            app.router.add_route(route.method, route.path, guard(route))
    document = openapi.document(PLUGINS)

    async def openapi_json(_request: web.Request) -> web.Response:
        return json_response(document)

    app.router.add_get("/api/v1/openapi.json", openapi_json)
    app.router.add_static("/static/", HERE / "static", show_index=False, follow_symlinks=False)
    for cleanup in on_cleanup:
        app.on_cleanup.append(cleanup)
    app.on_cleanup.append(_close_extras)
    return app


async def _close_extras(app: web.Application) -> None:
    """What plugins opened for the app's lifetime (the live feed's subscription …)."""
    for extra in app[CONSOLE].extras.values():
        closer = getattr(extra, "aclose", None)
        if closer is not None:
            await closer()
