"""The OpenAPI 3.1 document of /api/v1, built from what the plugins declared (web/registry.py).

Schemas are JSON Schema 2020-12 (OpenAPI 3.1 uses it as is), so the tests validate every
answer with jsonschema against the very document that is served.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from web.registry import PUBLIC, Plugin

ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "reference": {"type": "string"},
    },
}
_ERROR_RESPONSE = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def document(plugins: Iterable[Plugin]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for plugin in plugins:
        for route in plugin.routes:
            if not route.api:
                continue
            responses: dict[str, Any] = {
                "200": {"description": "OK",
                        "content": {route.content_type: {"schema": route.response or {}}}},
                "400": {"description": "invalid input", **_ERROR_RESPONSE},
                "404": {"description": "no such object in the caller's scope", **_ERROR_RESPONSE},
            }
            operation: dict[str, Any] = {
                "operationId": f"{plugin.name}.{route.handler.__name__}",
                "summary": route.summary,
                "tags": list(route.tags),
                "parameters": route.parameters,
                "responses": responses,
                # who may call it: a capability of routing/scope.py CAPABILITIES (or public /
                # signed_in), so a reader (and the tests) know which roles get 403
                "x-capability": route.capability,
            }
            if route.capability != PUBLIC:
                responses["401"] = {"description": "not signed in", **_ERROR_RESPONSE}
                responses["403"] = {"description": "the role may not do this", **_ERROR_RESPONSE}
                operation["security"] = [{"session": [], "csrf": []} if route.writes else {"session": []}]
            else:
                operation["security"] = []
            if route.writes:
                responses["409"] = {"description": "changed meanwhile", **_ERROR_RESPONSE}
                responses["422"] = {"description": "refused input", **_ERROR_RESPONSE}
            if route.request_body is not None:
                operation["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": route.request_body}}}
            paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Jiayi Hotline console API (家医热线)", "version": "1"},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "jy_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
        },
    }
