"""The console's security at the HTTP level: sign-in, throttling, sessions, CSRF, Origin, forced
password change, CSP, error pages, hostile paths and bodies (web/app.py, web/sessions.py,
web/plugins/auth). Each refusal is checked for "nothing changed" too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from aiohttp import web

import web.plugins as console_plugins
from tests.console import (
    PASSWORD,
    ConsoleClient,
    Harness,
    inline_scripts,
    open_console,
    parse_page,
)
from web.app import CONSOLE, SESSION_COOKIE, int_param, json_response
from web.registry import PUBLIC, SIGNED_IN, Plugin

NEW_PASSWORD = "another-good-pw-42"
SECRET_DETAIL = "secret-detail-7f3a /srv/hotline/web/app.py line 42"


async def signed_in_ok(client: ConsoleClient) -> bool:
    answer = await client.get("/api/v1/me")
    assert answer.status in (200, 401, 403), answer.status
    return answer.status == 200


def alert(html: str) -> str:
    start = html.find('role="alert">')
    assert start >= 0, "no alert in the page"
    return html[start + len('role="alert">'):html.find("</p>", start)]


def page_paths() -> list[str]:
    """The console's pages without a parameter, but the sign-in and password pages."""
    return sorted({r.path for p in console_plugins.PLUGINS for r in p.routes
                   if not r.api and r.method == "GET" and "{" not in r.path} - {"/login", "/password"})


# -- signing in ---------------------------------------------------------------------------------

async def test_right_password_signs_in_and_wrong_or_unknown_get_the_same_answer(console: Harness):
    who = await console.new_staff("family_doctor")
    right = console.client()
    answer = await right.try_sign_in(who.staff_no, who.password)
    assert answer.status == 303 and answer.location == "/"
    me = await right.get_json("/api/v1/me")
    assert (me["staff_id"], me["staff_no"], me["role"]) == (who.staff_id, who.staff_no, "family_doctor")

    answers = []
    for staff_no, password in ((who.staff_no, "wrong-password-1"), ("NOBODY9", "wrong-password-1")):
        client = console.client()
        refused = await client.try_sign_in(staff_no, password)
        assert client.session_cookie is None
        assert SESSION_COOKIE not in refused.headers.get("Set-Cookie", "")
        assert not await signed_in_ok(client)
        answers.append((refused.status, alert(refused.text)))
    wrong, unknown = answers
    assert wrong == unknown == (401, "工号或密码错误")


async def test_five_failures_lock_the_account_and_the_address(console: Harness):
    who = await console.new_staff("family_doctor")
    bystander = await console.new_staff("assistant")
    attacker = console.client()
    for _ in range(5):
        assert (await attacker.try_sign_in(who.staff_no, "not-the-password")).status == 401

    locked = await attacker.try_sign_in(who.staff_no, who.password)
    assert locked.status == 429
    assert "锁定" in alert(locked.text)
    assert attacker.session_cookie is None
    # The address is locked for every account …
    assert (await attacker.try_sign_in(bystander.staff_no, bystander.password)).status == 429
    # … and the account from every address (another loopback address is another client).
    elsewhere = console.client(local_address="127.0.0.2")
    assert (await elsewhere.try_sign_in(who.staff_no, who.password)).status == 429
    assert (await elsewhere.try_sign_in(bystander.staff_no, bystander.password)).status == 303

    console.clock.advance(timedelta(minutes=16))
    assert (await attacker.try_sign_in(who.staff_no, who.password)).status == 303


async def test_an_unknown_account_locks_like_a_known_one(console: Harness):
    client = console.client(local_address="127.0.0.3")
    statuses = [(await client.try_sign_in("NOBODY7", "whatever-pw-1")).status for _ in range(6)]
    assert statuses == [401] * 5 + [429]


# -- sessions -------------------------------------------------------------------------------------

async def test_sign_out_ends_the_session_for_the_old_cookie_too(console: Harness):
    client = await console.signed_in("family_doctor")
    token = client.session_cookie
    assert token and await signed_in_ok(client)
    out = await client.sign_out()
    assert out.status == 303 and out.location == "/login"
    assert client.session_cookie in (None, "")

    client.set_cookie(SESSION_COOKIE, token)  # the cookie kept by someone else
    page = await client.get("/")
    assert page.status == 303 and page.location.startswith("/login")
    api = await client.get("/api/v1/me")
    assert api.status == 401 and api.json()["error"] == "sign_in_required"
    assert await console.redis.get(await console.session_key(client)) is None


@pytest.mark.parametrize("cookie", ["forged-token", "A" * 43, "x" * 5000, "../../etc/passwd", ""])
async def test_a_forged_session_cookie_is_nobody(console: Harness, cookie: str):
    client = console.client()
    client.set_cookie(SESSION_COOKIE, cookie)
    api = await client.get("/api/v1/me")
    assert api.status == 401 and api.json() == {"error": "sign_in_required", "message": "请先登录"}
    page = await client.get("/password")
    assert page.status == 303 and page.location == "/login?next=/password"


async def test_a_session_idle_for_the_timeout_is_over(console: Harness):
    client = await console.signed_in("agent")
    key = await console.session_key(client)
    idle = console.site.app[CONSOLE].sessions.idle_s
    assert idle == 1800
    assert 0 < await console.redis.ttl(key) <= idle
    # Each request restarts the idle clock …
    await console.redis.expire(key, 5)
    assert await signed_in_ok(client)
    assert await console.redis.ttl(key) > 5
    # … and a session whose clock ran out (Redis dropped the key) is over.
    await console.redis.delete(key)
    assert (await client.get("/api/v1/me")).status == 401
    page = await client.get("/password?from=menu")
    assert page.status == 303 and page.location == "/login?next=/password?from=menu"


# -- CSRF and Origin --------------------------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "", "wrong-token", "x" * 5000])
async def test_logout_without_the_right_csrf_token_is_refused(console: Harness, token: str | None):
    client = await console.signed_in("assistant")
    fields = {} if token is None else {"csrf_token": token}
    refused = await client.post("/logout", data=fields, csrf=False)
    assert refused.status == 403
    assert "页面已过期" in refused.text
    assert await signed_in_ok(client)
    assert client.session_cookie


async def test_a_password_change_without_the_csrf_token_changes_nothing(console: Harness):
    who = await console.new_staff("family_doctor")
    client = await console.signed_in(who)
    fields = {"old_password": who.password, "new_password": NEW_PASSWORD,
              "new_password_again": NEW_PASSWORD}
    assert (await client.post("/password", data=fields, csrf=False)).status == 403
    assert (await client.post("/password", data=fields, csrf="not-the-token")).status == 403
    # The token of another session does not do either.
    other = await console.signed_in(who)
    assert (await client.post("/password", data=fields, csrf=other.csrf)).status == 403

    assert await signed_in_ok(client) and await signed_in_ok(other)
    assert (await console.client().try_sign_in(who.staff_no, NEW_PASSWORD)).status == 401
    assert (await console.client().try_sign_in(who.staff_no, who.password)).status == 303


async def test_the_sign_in_form_needs_its_csrf_cookie(console: Harness):
    who = await console.new_staff("agent")
    client = console.client()
    form = await client.get("/login")
    token = parse_page(form.text).inputs[0]["value"]
    client.forget_cookies()  # a page of another site posting to ours has no cookie to match
    answer = await client.post("/login", data={"csrf_token": token, "staff_no": who.staff_no,
                                               "password": who.password}, csrf=False)
    assert answer.status == 403 and client.session_cookie is None


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1"])
async def test_a_write_from_another_origin_is_refused(console: Harness, origin: str):
    client = await console.signed_in("agent")
    refused = await client.form("/logout", {}, origin=origin)
    assert refused.status == 403 and "跨站请求被拒绝" in refused.text
    assert await signed_in_ok(client)
    who = await console.new_staff("agent")
    stranger = console.client()
    form = await stranger.get("/login")
    answer = await stranger.post("/login", origin=origin, csrf=False, data={
        "csrf_token": parse_page(form.text).inputs[0]["value"], "staff_no": who.staff_no,
        "password": who.password})
    assert answer.status == 403 and stranger.session_cookie is None


# -- passwords --------------------------------------------------------------------------------------

async def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(console: Harness):
    who = await console.new_staff("family_doctor")
    here, there = await console.signed_in(who), await console.signed_in(who)
    old_token = here.session_cookie
    changed = await here.form("/password", {"old_password": who.password,
                                            "new_password": NEW_PASSWORD,
                                            "new_password_again": NEW_PASSWORD})
    assert changed.status == 303 and changed.location == "/"
    assert here.session_cookie != old_token  # a fresh token: no fixation
    assert await signed_in_ok(here)
    assert not await signed_in_ok(there)
    assert (await there.get("/password")).status == 303

    assert (await console.client().try_sign_in(who.staff_no, who.password)).status == 401
    assert (await console.client().try_sign_in(who.staff_no, NEW_PASSWORD)).status == 303


async def test_a_refused_new_password_changes_nothing(console: Harness):
    who = await console.new_staff("family_doctor")
    client = await console.signed_in(who)
    for fields in ({"old_password": who.password, "new_password": "short",
                    "new_password_again": "short"},
                   {"old_password": who.password, "new_password": NEW_PASSWORD,
                    "new_password_again": NEW_PASSWORD + "x"},
                   {"old_password": "not-my-password", "new_password": NEW_PASSWORD,
                    "new_password_again": NEW_PASSWORD}):
        answer = await client.form("/password", fields)
        assert answer.status == 422, (fields, answer.status, answer.text[:300])
        assert alert(answer.text)
    assert await signed_in_ok(client)
    assert (await console.client().try_sign_in(who.staff_no, who.password)).status == 303


async def test_a_one_time_code_opens_only_the_password_page_until_a_password_is_set(
        console: Harness):
    who = await console.new_staff("family_doctor", one_time_code=True)
    client = console.client()
    first = await client.try_sign_in(who.staff_no, who.password)
    assert first.status == 303 and first.location == "/password"
    for path in (*page_paths(), "/login"):
        page = await client.get(path)
        if path == "/login":  # signed in already: sent on, and on from there to /password
            page = await client.get(page.location)
        assert page.status == 303 and page.location == "/password", (path, page.status)
    api = await client.get("/api/v1/me")
    assert api.status == 403 and api.json()["error"] == "password_change_required"
    form = await client.get("/password")
    assert form.status == 200 and "首次登录" in form.text
    assert 'name="old_password"' not in form.text

    done = await client.form("/password", {"new_password": NEW_PASSWORD,
                                           "new_password_again": NEW_PASSWORD})
    assert done.status == 303 and done.location == "/"
    assert await signed_in_ok(client)
    # The code is spent: only the new password signs in now.
    assert (await console.client().try_sign_in(who.staff_no, who.password)).status == 401
    assert (await console.client().try_sign_in(who.staff_no, NEW_PASSWORD)).status == 303


# -- what every answer carries ------------------------------------------------------------------------

def assert_secure_headers(answer: Any, what: str) -> None:
    csp = answer.headers.get("Content-Security-Policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives.get("script-src") == ["'self'"], (what, csp)
    assert directives.get("frame-ancestors") == ["'none'"], (what, csp)
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, (what, csp)
    assert answer.headers.get("X-Content-Type-Options") == "nosniff", what
    assert answer.headers.get("X-Frame-Options") == "DENY", what


async def test_every_answer_has_the_csp_and_no_page_has_inline_script(console: Harness):
    anonymous = console.client()
    admin = await console.signed_in("district_admin")
    forced = console.client()
    code = await console.new_staff("agent", one_time_code=True)
    await forced.try_sign_in(code.staff_no, code.password)
    pages_of_the_console = page_paths()
    assert "/" in pages_of_the_console
    requests: list[tuple[ConsoleClient, str, str]] = [
        (anonymous, "GET", "/login"), (anonymous, "GET", "/password"),
        (anonymous, "GET", "/api/v1/me"), (anonymous, "GET", "/no/such/page"),
        (anonymous, "GET", "/api/v1/openapi.json"), (anonymous, "GET", "/static/console.js"),
        (anonymous, "GET", "/static/console.css"), (anonymous, "POST", "/logout"),
        (admin, "GET", "/api/v1/me"), (admin, "GET", "/no/such/page"), (admin, "PUT", "/login"),
        (forced, "GET", "/password"), (forced, "GET", "/api/v1/me"),
        *((admin, "GET", path) for path in pages_of_the_console),
    ]
    pages = 0
    for client, method, path in requests:
        answer = await client.request(method, path, follow=True)
        assert_secure_headers(answer, f"{method} {path}")
        if answer.content_type == "text/html":
            pages += 1
            assert answer.text.lstrip().lower().startswith("<!doctype html>"), path
            assert not inline_scripts(answer.text), (path, inline_scripts(answer.text))
            assert [s["src"] for s in parse_page(answer.text).scripts] == ["/static/console.js"]
        if not path.startswith("/static/"):
            assert answer.headers.get("Cache-Control") == "no-store", path
    assert pages >= 8


def test_inline_scripts_finds_what_the_csp_would_block():
    assert inline_scripts('<script>alert(1)</script>')
    assert inline_scripts('<script src="/static/console.js"></script><p onclick="x()">')
    assert inline_scripts('<a href="javascript:alert(1)">')
    assert not inline_scripts('<script src="/static/console.js" defer></script><p class="on">')


# -- error pages, and a console with routes of the test's own -------------------------------------------

TEST_PLUGIN = Plugin("probe")


@TEST_PLUGIN.page("GET", "/probe/boom", capability=PUBLIC)
async def boom_page(request: web.Request) -> web.StreamResponse:
    raise RuntimeError(SECRET_DETAIL)


@TEST_PLUGIN.api("GET", "/api/v1/probe/boom", capability=SIGNED_IN, summary="raises")
async def boom_api(request: web.Request) -> web.StreamResponse:
    raise KeyError(SECRET_DETAIL)


@TEST_PLUGIN.api("GET", "/api/v1/probe/things/{thing_id}", capability=SIGNED_IN, summary="by id",
                 response={"type": "object"})
async def thing(request: web.Request) -> web.StreamResponse:
    return json_response({"id": int_param(request, "thing_id")})


@pytest.fixture
async def probed(console: Harness, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """A second console over the same stores whose plugins include TEST_PLUGIN's routes."""
    monkeypatch.setattr(console_plugins, "PLUGINS", (*console_plugins.PLUGINS, TEST_PLUGIN))
    async with open_console(console.pool, console.redis, console.vault, console.district,
                            logins=console.logins, clock=console.clock,
                            redis_url=console.redis_url) as harness:
        yield harness


def assert_nothing_internal(text: str) -> None:
    for leak in ("Traceback", "RuntimeError", "KeyError", "secret-detail", "/srv/hotline",
                 "app.py", "aiohttp", "asyncpg", 'File "'):
        assert leak not in text, leak


async def test_error_pages_show_no_internals(probed: Harness):
    client = await probed.signed_in("district_admin")
    page = await client.get("/probe/boom")
    assert page.status == 500 and page.content_type == "text/html"
    assert_nothing_internal(page.text)
    assert "服务器内部错误" in page.text and "参考号" in page.text
    api = await client.get("/api/v1/probe/boom")
    assert api.status == 500
    body = api.json()
    assert body["error"] == "internal_error" and len(body["reference"]) == 12
    assert_nothing_internal(api.text)
    for method, path, status in (("GET", "/no/such/page", 404), ("GET", "/api/v1/nothing", 404),
                                 ("DELETE", "/login", 405), ("POST", "/api/v1/me", 405)):
        answer = await client.request(method, path)
        assert answer.status == status, (method, path, answer.status)
        assert_nothing_internal(answer.text)
        if path.startswith("/api/"):
            assert answer.json()["error"] in ("not_found", "method_not_allowed")
        else:
            assert "<title>出错了" in answer.text
    assert "GET" in (await client.post("/api/v1/me")).headers.get("Allow", "")


HOSTILE_IDS = ["..%2F..%2Fetc%2Fpasswd", "..%2f..%2fetc%2fpasswd", "1;DROP", "1%3BDROP%20TABLE%20staff",
               "-1", "0", "1.5", "1e3", "0x10", "%20", "%00", "1%00", "%EF%BC%91", "٣",
               "99999999999999999999999", str(2**63), "9" * 400, "%3Cscript%3E", "'%20OR%201=1"]


async def test_hostile_ids_in_a_path_name_nothing(probed: Harness):
    client = await probed.signed_in("district_admin")
    assert (await client.get_json("/api/v1/probe/things/7")) == {"id": 7}  # the probe does answer
    for raw in HOSTILE_IDS:
        answer = await client.get("/api/v1/probe/things/" + raw)
        assert answer.status == 404, (raw, answer.status, answer.text[:200])
        assert answer.json()["error"] == "not_found", raw
        assert_nothing_internal(answer.text)


async def test_hostile_ids_in_every_declared_id_route(console: Harness):
    """Every API route with a path parameter, as a role that may call it: never 5xx, never 200."""
    from routing.scope import CAPABILITIES

    document = await console.openapi()
    clients: dict[str, Any] = {}
    routes = [(path, method, operation["x-capability"]) for path, operations in document["paths"].items()
              if "{" in path for method, operation in operations.items() if method == "get"
              and "text/event-stream" not in operation["responses"]["200"]["content"]]
    for path, method, capability in routes:
        role = next(r for r in ("district_admin", "family_doctor", "agent")
                    if capability not in CAPABILITIES or r in CAPABILITIES[capability])
        if role not in clients:
            clients[role] = await console.signed_in(role)
        client = clients[role]
        for raw in HOSTILE_IDS:
            concrete = path
            while "{" in concrete:
                start = concrete.index("{")
                concrete = concrete[:start] + raw + concrete[concrete.index("}", start) + 1:]
            answer = await client.request(method.upper(), concrete)
            assert answer.status in (400, 404), (method, concrete, answer.status)
            assert_nothing_internal(answer.text)


@pytest.mark.parametrize("target", ["//evil.example", "//evil.example/login", "/\\evil.example",
                                    "https://evil.example/", "http:evil.example", "\t//evil.example",
                                    "/%2F/evil.example", "///evil.example", "/\t/evil.example",
                                    "javascript:alert(1)"])
async def test_next_never_leaves_the_console(console: Harness, target: str):
    who = await console.new_staff("agent")
    client = console.client()
    answer = await client.try_sign_in(who.staff_no, who.password, next=quote(target, safe=""))
    assert answer.status == 303
    assert_local(answer.location)
    again = await client.get("/login?next=" + quote(target, safe=""))  # signed in: sent on
    assert again.status == 303
    assert_local(again.location)


def assert_local(location: str | None) -> None:
    assert location is not None
    parts = urlsplit(location)
    assert not parts.scheme and not parts.netloc, location
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    assert not any(ord(ch) < 32 for ch in location), location


async def test_next_within_the_console_is_kept(console: Harness):
    who = await console.new_staff("agent")
    client = console.client()
    answer = await client.try_sign_in(who.staff_no, who.password, next=quote("/calls?day=3"))
    assert answer.status == 303 and answer.location == "/calls?day=3"


async def test_a_two_megabyte_form_is_refused_unread(console: Harness):
    who = await console.new_staff("agent")
    anonymous = console.client()
    huge = {"staff_no": who.staff_no, "password": who.password, "filler": "x" * (2 * 1024 * 1024)}
    answer = await anonymous.post("/login", data=huge, csrf=False)
    assert answer.status == 413
    assert anonymous.session_cookie is None
    client = await console.signed_in(who)
    answer = await client.form("/password", {"old_password": who.password,
                                             "new_password": NEW_PASSWORD,
                                             "new_password_again": NEW_PASSWORD,
                                             "filler": "y" * (2 * 1024 * 1024)})
    assert answer.status == 413 and "上传内容过大" in answer.text
    assert await signed_in_ok(client)
    assert (await console.client().try_sign_in(who.staff_no, PASSWORD)).status == 303
