"""How a console capability declares its pages and API routes.

A capability is a package under web/plugins/ with a `PLUGIN = Plugin(...)` in its http.py; it
declares each route with the capability it needs (routing/scope.py CAPABILITIES) and, for the
JSON API, the schema of its answer (the OpenAPI document is built from these declarations, and
the tests validate every answer against it). The wrapper the registry puts around every handler
is where "signed in?", "may this role?", "read-only role writing?" are answered — once, for every
route — before the handler runs. Adding a page: a new plugin package, listed in web/plugins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC = "public"        # no sign-in needed (the sign-in page, the OpenAPI document)
SIGNED_IN = "signed_in"  # any signed-in staff member


@dataclass(frozen=True)
class NavItem:
    path: str
    title: str       # in the console's language
    capability: str
    order: int = 50


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    capability: str
    api: bool                 # JSON under /api/v1 (401 JSON) or a page (redirect to sign-in)
    writes: bool = False      # changes state: CSRF checked; refused to read-only roles
    summary: str = ""
    response: dict[str, Any] | None = None        # JSON Schema of the 200 answer
    parameters: list[dict[str, Any]] = field(default_factory=list)  # OpenAPI parameter objects
    request_body: dict[str, Any] | None = None    # JSON Schema of a JSON body
    content_type: str = "application/json"        # of the 200 answer
    tags: tuple[str, ...] = ()
    # An upload larger than the app's MAX_BODY (a prompt recording): the handler streams the
    # body itself up to this many bytes; the guard refuses a larger declared length unread and
    # takes the CSRF token from the header only (reading a form would read the whole body).
    max_body: int | None = None


class Plugin:
    def __init__(self, name: str, *, nav: tuple[NavItem, ...] = (), templates: str | None = None):
        self.name = name
        self.nav = nav
        self.routes: list[Route] = []
        self.templates = templates  # a folder of templates, beside http.py

    def page(self, method: str, path: str, *, capability: str, writes: bool = False
             ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, handler, capability, api=False, writes=writes))
            return handler
        return register

    def api(self, method: str, path: str, *, capability: str, summary: str,
            response: dict[str, Any] | None = None, parameters: list[dict[str, Any]] | None = None,
            request_body: dict[str, Any] | None = None, writes: bool = False,
            content_type: str = "application/json", max_body: int | None = None
            ) -> Callable[[Handler], Handler]:
        if not path.startswith("/api/v1/"):
            raise ValueError(f"API routes live under /api/v1: {path}")

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, handler, capability, api=True, writes=writes,
                                     summary=summary, response=response,
                                     parameters=parameters or [], request_body=request_body,
                                     content_type=content_type, tags=(self.name,),
                                     max_body=max_body))
            return handler
        return register


def query_param(name: str, schema: dict[str, Any], *, required: bool = False,
                description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            **({"description": description} if description else {})}


def path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": schema or {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}}
