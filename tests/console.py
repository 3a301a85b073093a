"""The harness of every console test: one console server for the whole test session, clients
that sign in like a browser does, and a check of JSON answers against the served OpenAPI document.

Cost decides the shape. Starting a site and making a database are the expensive parts, so
`console_server` does them once per session: a database of its own (cloned from the migrated
template), the small test district of tests/district.py plus the roles it lacks (district admin,
supervisor, director), and an account with the password PASSWORD for each role
(`console.logins[role]`). Passwords are hashed with the cheapest argon2id parameters (the
production cost is about a second per sign-in on the shared test machine); every rule is the same.
Isolation between tests comes from two cheap things instead:
- the console's Redis database (sessions, the sign-in throttle, presence) is flushed before each
  test by the function-scoped `console` fixture, and its clock set true, so no session, lock or
  counter leaks over;
- a test that changes an account (locks it, changes its password, gets a one-time code) makes a
  fresh staff member with `await console.new_staff(role)`, never one of the shared logins.
Data a test writes in the shared database stays for later tests: write rows that only you find
(a district of your own), or open a private site with `open_console` (on the per-test `pool`, or
on the shared stores with web.plugins.PLUGINS monkeypatched to add a route of the test's own).

Use: `async def test_x(console: Harness)`; `client = await console.signed_in("director")`;
`await client.get_json("/api/v1/me")`; `await client.form("/logout", {})`;
`assert_conforms(await console.openapi(), "GET", "/api/v1/calls/{call_id}", 200, body)`.

The console listens on 127.0.0.1, port 0, on the session's event loop (pytest-asyncio session
loop scope): clients (aiohttp) and the browser (Playwright's async API, tests/browser.py) all
await on that loop, so the server answers while a test waits for it. Blocking clients (requests,
schemathesis) must run in a thread (asyncio.to_thread), or they stop the server they wait for.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import jsonschema
import pytest
import redis.asyncio as aioredis
from argon2 import PasswordHasher
from multidict import CIMultiDictProxy
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from yarl import URL

from routing.records import NewStaff, write_staff
from store import db
from store.pii import PiiVault
from store.redis import connect_redis
from tests.conftest import TEMPLATE_DB, scratch_database
from tests.district import District, build_district
from web.app import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE
from web.server import ConsoleSite, console_site
from web.sessions import SESSION_PREFIX

SH = ZoneInfo("Asia/Shanghai")
# The shared logins' password (policy: ≥ 10 characters, not only digits, not common).
PASSWORD = "console-test-pw"
# The console's own Redis database: the `redis` fixture flushes database 0 under other tests.
CONSOLE_REDIS_DB = 11
_staff_numbers = itertools.count(1)
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@dataclass(frozen=True)
class Login:
    staff_id: int
    staff_no: str
    password: str
    role: str


class Clock:
    """The console's `now`: real time, moved by `advance` (lock expiry without waiting)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, by: timedelta) -> None:
        self.offset += by

    def reset(self) -> None:
        self.offset = timedelta()


# -- reading pages ---------------------------------------------------------------------------

class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.inputs: list[dict[str, str]] = []
        self.scripts: list[dict[str, str]] = []   # attributes of each <script>
        self.inline_script_text: list[str] = []
        self.event_handlers: list[tuple[str, str]] = []  # (tag, on… attribute)
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.event_handlers += [(tag, k) for k in values if k.startswith("on")]
        if tag == "meta" and "name" in values:
            self.meta[values["name"]] = values.get("content", "")
        elif tag == "input":
            self.inputs.append(values)
        elif tag == "script":
            self.scripts.append(values)
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script_text.append(data)


def parse_page(html: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser


def hidden_field(html: str, name: str) -> str:
    for attrs in parse_page(html).inputs:
        if attrs.get("name") == name:
            return attrs.get("value", "")
    raise AssertionError(f"no input named {name!r} in the page")


def inline_scripts(html: str) -> list[str]:
    """What in a page the CSP would have to allow as inline script: <script> without src, with a
    body, on…= handlers, javascript: URLs. Empty for every page of the console."""
    page = parse_page(html)
    found = [f"<script> without src: {s}" for s in page.scripts if not s.get("src")]
    found += [f"inline script text: {t[:60]!r}" for t in page.inline_script_text]
    found += [f"<{tag} {attr}=…>" for tag, attr in page.event_handlers]
    found += [f"javascript: URL {m[:60]!r}" for m in re.findall(r"javascript:[^\"'>]*", html, re.I)]
    return found


# -- a client of the console -------------------------------------------------------------------

@dataclass
class Answer:
    """An HTTP answer, read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    text: str
    url: str

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    def json(self) -> Any:
        assert self.content_type == "application/json", (self.status, self.content_type, self.text[:200])
        return json.loads(self.text)


class ConsoleClient:
    """A browser without JavaScript: its own cookie jar, the Origin header a browser sends, and the
    session's CSRF token (taken from the <meta name="csrf-token"> of every page it reads) sent
    with every write. Redirects are not followed unless asked (`follow=True`): most security
    checks are about where a redirect goes."""

    def __init__(self, base_url: str, *, local_address: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.origin = self.base_url
        # unsafe: the console is at an IP address, whose cookies aiohttp drops by default.
        self.jar = aiohttp.CookieJar(unsafe=True)
        connector = aiohttp.TCPConnector(local_addr=(local_address, 0) if local_address else None)
        self.http = aiohttp.ClientSession(cookie_jar=self.jar, connector=connector,
                                          timeout=aiohttp.ClientTimeout(total=30))
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def __aenter__(self) -> ConsoleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- cookies -----------------------------------------------------------------------------

    def cookie(self, name: str) -> str | None:
        for morsel in self.jar:
            if morsel.key == name:
                return morsel.value
        return None

    @property
    def session_cookie(self) -> str | None:
        return self.cookie(SESSION_COOKIE)

    def set_cookie(self, name: str, value: str) -> None:
        self.jar.update_cookies({name: value}, URL(self.base_url + "/"))

    def forget_cookies(self) -> None:
        self.jar.clear()

    # -- requests ----------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, follow: bool = False,
                      csrf: str | None | bool = True, origin: str | None | bool = True,
                      headers: dict[str, str] | None = None, read: bool = True,
                      **kwargs: Any) -> Answer:
        """`csrf`: True sends the session's token on writes, False/None none, a string that one.
        `origin`: True sends this site's Origin on writes (as browsers do), a string that one.
        `read=False`: the status and headers only, the connection closed unread (an event
        stream never ends)."""
        sent = dict(headers or {})
        writes = method.upper() not in ("GET", "HEAD", "OPTIONS")
        if writes and origin is True:
            sent["Origin"] = self.origin
        elif isinstance(origin, str):
            sent["Origin"] = origin
        if writes and csrf is True and self.csrf:
            sent[CSRF_HEADER] = self.csrf
        elif isinstance(csrf, str):
            sent[CSRF_HEADER] = csrf
        url = path if path.startswith("http") else self.base_url + path
        async with self.http.request(method, url, headers=sent, allow_redirects=follow,
                                     **kwargs) as response:
            text = await response.text(errors="replace") if read else ""
            if not read:
                response.close()
            answer = Answer(response.status, response.headers, text, str(response.url))
        if answer.content_type == "text/html":
            token = parse_page(answer.text).meta.get("csrf-token")
            if token:
                self.csrf = token
        return answer

    async def get(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Answer:
        return await self.request("DELETE", path, **kwargs)

    async def json(self, method: str, path: str, body: Any = None, *, status: int = 200,
                   **kwargs: Any) -> Any:
        """The JSON answer of an API call, which must have `status`."""
        if body is not None:
            kwargs["json"] = body
        answer = await self.request(method, path, **kwargs)
        assert answer.status == status, (method, path, answer.status, answer.text[:300])
        return answer.json()

    async def get_json(self, path: str, *, status: int = 200, **kwargs: Any) -> Any:
        return await self.json("GET", path, status=status, **kwargs)

    async def form(self, path: str, fields: dict[str, str], **kwargs: Any) -> Answer:
        """POST a form as the page's <form> would: the CSRF token in its hidden field."""
        data = dict(fields)
        if kwargs.pop("csrf_field", True) and self.csrf and CSRF_FIELD not in data:
            data[CSRF_FIELD] = self.csrf
        return await self.post(path, data=data, csrf=kwargs.pop("csrf", False), **kwargs)

    # -- signing in and out ------------------------------------------------------------------

    async def try_sign_in(self, staff_no: str, password: str, *, next: str | None = None) -> Answer:
        """Fill in and send the sign-in form (its double-submit CSRF token included); the answer
        unfollowed: 303 on success, the form again (401 / 429) when refused."""
        form = await self.get("/login" + (f"?next={next}" if next else ""))
        assert form.status == 200, (form.status, form.text[:200])
        fields = {CSRF_FIELD: hidden_field(form.text, CSRF_FIELD), "staff_no": staff_no,
                  "password": password, "next": hidden_field(form.text, "next")}
        return await self.post("/login", data=fields, csrf=False)

    async def sign_in(self, staff_no: str | Login, password: str | None = None) -> Answer:
        """Sign in (a Login, or a staff number and password) and pick up the session's CSRF token;
        fails the test when refused."""
        if isinstance(staff_no, Login):
            staff_no, password = staff_no.staff_no, password or staff_no.password
        assert password is not None
        answer = await self.try_sign_in(staff_no, password)
        assert answer.status == 303, (answer.status, answer.text[:300])
        assert self.session_cookie, "signed in without a session cookie"
        await self.refresh_csrf()
        return answer

    async def refresh_csrf(self) -> str:
        """The session's CSRF token, from a page every signed-in person may open."""
        page = await self.get("/password")
        assert page.status == 200, (page.status, page.location)
        assert self.csrf, "no csrf-token meta in the page"
        return self.csrf

    async def sign_out(self) -> Answer:
        return await self.form("/logout", {})


# -- the OpenAPI document ------------------------------------------------------------------

_OPENAPI_URI = "urn:hotline:console-openapi"


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def response_schema(document: dict[str, Any], method: str, path_template: str, status: int
                    ) -> dict[str, Any] | None:
    """The $ref to the documented JSON schema of this answer (None: documented without a JSON
    body); AssertionError when the document does not list the answer at all."""
    operation = document["paths"].get(path_template, {}).get(method.lower())
    assert operation is not None, f"{method} {path_template} is not in the OpenAPI document"
    responses = operation["responses"]
    key = str(status) if str(status) in responses else f"{str(status)[0]}XX"
    if key not in responses:
        key = "default"
    assert key in responses, f"{method} {path_template} does not document a {status} answer"
    content = responses[key].get("content")
    if not content:
        return None
    assert "application/json" in content, f"{method} {path_template} {status}: not JSON: {list(content)}"
    return {"$ref": f"{_OPENAPI_URI}#/" + _pointer("paths", path_template, method.lower(),
                                                   "responses", key, "content",
                                                   "application/json", "schema")}


def assert_conforms(document: dict[str, Any], method: str, path_template: str, status: int,
                    body: Any) -> None:
    """The JSON `body` of a `status` answer to `method path_template` is what the served document
    says (JSON Schema 2020-12, #/components refs resolved in the document)."""
    schema = response_schema(document, method, path_template, status)
    assert schema is not None, f"{method} {path_template} {status} documents no JSON body"
    registry: Registry = Registry().with_resource(
        _OPENAPI_URI, Resource.from_contents(document, default_specification=DRAFT202012))
    validator = jsonschema.Draft202012Validator(schema, registry=registry,
                                                format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, (f"{method} {path_template} {status} does not conform:\n"
                        + "\n".join(f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                                    for e in errors[:10]))


# -- the console under test -------------------------------------------------------------------

@dataclass
class Harness:
    """A running console and what tests need beside it."""

    site: ConsoleSite
    pool: asyncpg.Pool
    redis: aioredis.Redis
    vault: PiiVault
    clock: Clock
    district: District
    logins: dict[str, Login] = field(default_factory=dict)   # by role: one shared login each
    redis_url: str | None = None  # of `redis`, for connections of a test's own (pub/sub)
    _clients: list[ConsoleClient] = field(default_factory=list)
    _document: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        return self.site.url.rstrip("/")

    @property
    def accounts(self) -> Any:  # web.accounts.Accounts
        from web.app import CONSOLE
        return self.site.app[CONSOLE].accounts

    def client(self, *, local_address: str | None = None) -> ConsoleClient:
        """A new client (closed when the test ends if it is not closed before)."""
        made = ConsoleClient(self.url, local_address=local_address)
        self._clients.append(made)
        return made

    async def signed_in(self, who: str | Login) -> ConsoleClient:
        """A client signed in as one of the shared logins (by role) or as `who`."""
        made = self.client()
        await made.sign_in(self.logins[who] if isinstance(who, str) else who)
        return made

    async def new_staff(self, role: str, *, password: str | None = PASSWORD,
                        one_time_code: bool = False, name: str = "测试人员") -> Login:
        """A staff member of the test district only this test knows, with a password (or, with
        one_time_code, a one-time code as `password`: the sign-in that must set a new one)."""
        d = self.district
        number = f"T{next(_staff_numbers):05d}"
        center = None if role in ("district_admin", "supervisor", "agent") else d.center_id
        team = d.team_id if role in ("family_doctor", "assistant", "nurse") else None
        async with self.pool.acquire() as conn, conn.transaction():
            (staff_id,) = await write_staff(conn, self.vault, [NewStaff(
                number, name, role, d.district_id, center, team)])
        secret = ""
        if one_time_code:
            secret = await self.accounts.issue_one_time_code(staff_id, actor="test:harness")
        elif password is not None:
            await self.accounts.set_password(staff_id, password, actor="test:harness")
            secret = password
        return Login(staff_id, number, secret, role)

    async def openapi(self) -> dict[str, Any]:
        if self._document is None:
            async with aiohttp.ClientSession() as http, \
                    http.get(self.url + "/api/v1/openapi.json") as response:
                assert response.status == 200
                self._document = await response.json()
        return self._document

    async def session_key(self, client: ConsoleClient) -> str:
        """The Redis key of the client's session (the store keeps the token's SHA-256)."""
        token = client.session_cookie
        assert token, "the client has no session cookie"
        return SESSION_PREFIX + hashlib.sha256(token.encode()).hexdigest()

    async def _reset(self) -> None:
        for made in self._clients:
            await made.close()
        self._clients.clear()
        self.clock.reset()
        await self.redis.flushdb()


ROLE_STAFF = {"family_doctor": "doctor_id", "assistant": "assistant_id",
              "night_doctor": "night_id", "agent": "agent_id"}


async def add_district_roles(pool: asyncpg.Pool, vault: PiiVault, district: District
                             ) -> dict[str, int]:
    """The roles tests/district.py has not: a district admin, a supervisor, a center director."""
    async with pool.acquire() as conn, conn.transaction():
        admin, supervisor, director = await write_staff(conn, vault, [
            NewStaff("M001", "周管理员", "district_admin", district.district_id),
            NewStaff("Q001", "吴质控", "supervisor", district.district_id),
            NewStaff("C001", "郑主任", "director", district.district_id, district.center_id),
        ])
    return {"district_admin": admin, "supervisor": supervisor, "director": director}


@asynccontextmanager
async def open_console(pool: asyncpg.Pool, redis: aioredis.Redis, vault: PiiVault, district: District,
                       *, logins: dict[str, Login] | None = None, clock: Clock | None = None,
                       idle_timeout_s: float = 1800.0, redis_url: str | None = None
                       ) -> AsyncIterator[Harness]:
    """A console on 127.0.0.1 (a free port) over these stores, until the block ends. Plugins are
    read from web.plugins.PLUGINS when the app is made: monkeypatch it first to add a route."""
    clock = clock or Clock()
    async with console_site(pool=pool, redis=redis, vault=vault, tz=SH, now=clock,
                            host="127.0.0.1", port=0, idle_timeout_s=idle_timeout_s,
                            redis_url=redis_url) as site:
        harness = Harness(site, pool, redis, vault, clock, district, dict(logins or {}),
                          redis_url=redis_url)
        # argon2 with its production cost takes about a second per sign-in on a busy test
        # machine; the cheapest argon2id keeps every rule the same and the tests fast.
        harness.accounts.hasher = CHEAP_HASHER
        try:
            yield harness
        finally:
            await harness._reset()


async def give_passwords(harness: Harness, staff: dict[str, int]) -> None:
    for role, staff_id in staff.items():
        await harness.accounts.set_password(staff_id, PASSWORD, actor="test:harness")
        no = await harness.pool.fetchval("SELECT staff_no FROM staff WHERE id = $1", staff_id)
        harness.logins[role] = Login(staff_id, no, PASSWORD, role)


def this_monday() -> date:
    today = datetime.now(SH).date()
    return today - timedelta(days=today.weekday())


def console_redis_url(redis_url: str) -> str:
    """The URL of the console's own Redis database on the session's server."""
    base = re.sub(r"([?&])db=\d+&?", r"\1", redis_url).rstrip("?&")
    if base.startswith("unix://"):
        return f"{base}{'&' if '?' in base else '?'}db={CONSOLE_REDIS_DB}"
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{CONSOLE_REDIS_DB}"))


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
async def console_database_url(pg_admin_url: str, template_url: str) -> AsyncIterator[str]:
    async with scratch_database(pg_admin_url, "hotline_console", TEMPLATE_DB) as url:
        yield url


@pytest.fixture(scope="session")
async def console_server(console_database_url: str, redis_url: str, vault: PiiVault
                         ) -> AsyncIterator[Harness]:
    """The session's console: the test district, a login per role (password PASSWORD)."""
    pool = await db.create_pool(console_database_url, max_size=8)
    url = console_redis_url(redis_url)
    redis = await connect_redis(url)
    try:
        district = await build_district(pool, vault, week_of=this_monday())
        staff = {role: getattr(district, attr) for role, attr in ROLE_STAFF.items()}
        staff.update(await add_district_roles(pool, vault, district))
        async with open_console(pool, redis, vault, district, redis_url=url) as harness:
            await give_passwords(harness, staff)
            yield harness
    finally:
        await redis.aclose()
        await pool.close()


@pytest.fixture
async def console(console_server: Harness) -> AsyncIterator[Harness]:
    """The shared console, its Redis (sessions, throttle, presence) empty and its clock true."""
    await console_server._reset()
    yield console_server
    await console_server._reset()


@pytest.fixture
def new_client(console: Harness) -> Callable[[], ConsoleClient]:
    return console.client


@pytest.fixture
def sign_in_as(console: Harness) -> Callable[[str | Login], Awaitable[ConsoleClient]]:
    """`await sign_in_as("district_admin")`: a client signed in as that role's shared login."""
    return console.signed_in


@pytest.fixture
async def openapi_document(console: Harness) -> dict[str, Any]:
    return await console.openapi()
