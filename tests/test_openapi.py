"""The OpenAPI 3.1 document of the console (web/openapi.py): valid, true to what the API answers,
and without a server error anywhere schemathesis looks (bounded examples per operation)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings

# The official OpenAPI 3.1 schema (OAI/OpenAPI-Specification schemas/v3.1), as schemathesis ships it.
from schemathesis.specs.openapi.definitions import OPENAPI_31

import web.plugins as console_plugins
from routing.scope import CAPABILITIES
from tests.console import Harness, assert_conforms, open_console, response_schema
from web.app import CSRF_HEADER, SESSION_COOKIE, json_response
from web.registry import SIGNED_IN, Plugin, query_param

MAX_EXAMPLES = 20


# -- the document itself ------------------------------------------------------------------------

def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _schemas(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every JSON Schema in the document, named by where it is."""
    found = [(f"components/schemas/{name}", schema)
             for name, schema in document["components"]["schemas"].items()]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            found += [(f"{where} parameter {p['name']}", p["schema"]) for p in operation["parameters"]]
            body = operation.get("requestBody", {}).get("content", {})
            found += [(f"{where} body {kind}", c["schema"]) for kind, c in body.items()]
            for status, answer in operation["responses"].items():
                found += [(f"{where} {status} {kind}", c["schema"])
                          for kind, c in answer.get("content", {}).items()]
    return found


async def test_the_document_is_valid_openapi_3_1(console: Harness):
    document = await console.openapi()
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    jsonschema.Draft202012Validator(OPENAPI_31).validate(document)

    for ref in _refs(document):  # every reference points at something
        assert isinstance(_resolve(document, ref), dict), ref
    schemes = document["components"]["securitySchemes"]
    operation_ids = []
    for path, operations in document["paths"].items():
        assert path.startswith("/api/v1/"), path
        templated = set(re.findall(r"\{([^}]+)\}", path))
        for method, operation in operations.items():
            operation_ids.append(operation["operationId"])
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == templated, (method, path, declared, templated)
            assert all(p["required"] for p in operation["parameters"] if p["in"] == "path")
            for requirement in operation["security"]:
                assert set(requirement) <= set(schemes), (method, path, requirement)
            assert "200" in operation["responses"], (method, path)
    assert len(operation_ids) == len(set(operation_ids)), "operationIds are not unique"
    for where, schema in _schemas(document):  # each a valid JSON Schema 2020-12
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema != {} or "200" not in where or "application/json" not in where, \
            f"{where}: an answer with no schema promises nothing"


async def test_the_document_lists_every_api_route_and_only_those(console: Harness):
    document = await console.openapi()
    declared = {(r.method.lower(), r.path) for p in console_plugins.PLUGINS for r in p.routes if r.api}
    listed = {(m, path) for path, ops in document["paths"].items() for m in ops}
    assert listed == declared
    assert ("get", "/api/v1/me") in listed


def test_assert_conforms_refuses_what_the_document_does_not_say():
    document = {"openapi": "3.1.0", "paths": {"/api/v1/x": {"get": {"responses": {
        "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/X"}}}}}}}},
        "components": {"schemas": {"X": {"type": "object", "required": ["n"],
                                          "properties": {"n": {"type": "integer"}}}}}}
    assert_conforms(document, "GET", "/api/v1/x", 200, {"n": 1})
    with pytest.raises(AssertionError, match="n"):
        assert_conforms(document, "GET", "/api/v1/x", 200, {"n": "1"})
    with pytest.raises(AssertionError, match="does not document a 404"):
        assert_conforms(document, "GET", "/api/v1/x", 404, {})
    with pytest.raises(AssertionError, match="not in the OpenAPI document"):
        assert_conforms(document, "GET", "/api/v1/y", 200, {})


# -- every route, as the district admin ----------------------------------------------------------

async def test_every_api_route_answers_conforming_json(console: Harness):
    """Each GET route that needs no id, as a role that may open it (the district admin, or a
    family doctor for what only those who answer calls have): 200 and the documented schema;
    unsigned, 401 and the documented error."""
    document = await console.openapi()
    signed_in = {role: await console.signed_in(role) for role in ("district_admin", "family_doctor")}
    anonymous = console.client()
    checked = 0
    for path, operations in document["paths"].items():
        operation = operations.get("get")
        if operation is None or "{" in path or any(p["required"] for p in operation["parameters"]):
            continue
        capability = operation["x-capability"]
        admin = signed_in["family_doctor" if capability in CAPABILITIES
                          and "district_admin" not in CAPABILITIES[capability] else "district_admin"]
        (kind,) = operation["responses"]["200"]["content"]
        if kind == "text/event-stream":  # never ends: the status and type are the answer
            stream = await admin.get(path, read=False)
            assert (stream.status, stream.content_type) == (200, kind), path
            continue
        answer = await admin.get(path)
        assert answer.status == 200, (path, answer.status, answer.text[:300])
        assert answer.content_type == kind, (path, answer.content_type)
        if response_schema(document, "get", path, 200) is not None and \
                answer.content_type == "application/json":
            assert_conforms(document, "get", path, 200, answer.json())
            checked += 1
        if operation["security"]:
            refused = await anonymous.get(path)
            assert refused.status == 401, path
            assert_conforms(document, "get", path, 401, refused.json())
    assert checked >= 1
    missing = await admin.get("/api/v1/no-such-thing")
    assert missing.status == 404 and missing.json()["error"] == "not_found"


# -- schemathesis ----------------------------------------------------------------------------------

def fuzz(document: dict[str, Any], base_url: str, *, cookies: dict[str, str],
         headers: dict[str, str], max_examples: int = MAX_EXAMPLES) -> tuple[int, list[str]]:
    """Schemathesis' cases for every operation of `document` sent to `base_url`: how many were
    sent, and what went wrong (a 5xx, or a JSON answer other than the document says).

    Blocking (requests): run it in a thread, so the event loop serving the console keeps going."""
    schema = schemathesis.openapi.from_dict(document)
    problems: list[str] = []
    sent = 0
    with requests.Session() as http:
        for result in schema.get_all_operations():
            operation = result.ok()
            if "text/event-stream" in operation.definition.raw["responses"]["200"]["content"]:
                continue  # an event stream never ends; test_every_api_route_… opens those
            sent += _fuzz_operation(operation, document, base_url, http, problems, cookies=cookies,
                                    headers=headers, max_examples=max_examples)
    return sent, problems


def _fuzz_operation(operation: Any, document: dict[str, Any], base_url: str, http: requests.Session,
                    problems: list[str], *, cookies: dict[str, str], headers: dict[str, str],
                    max_examples: int) -> int:
    sent = 0

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(headers=headers, cookies=cookies))
    def send(case: Any) -> None:
        nonlocal sent
        response = case.call(base_url=base_url, session=http, timeout=30)
        sent += 1
        where = f"{case.method} {case.formatted_path} {case.query or ''} → {response.status_code}"
        if response.status_code >= 500:
            problems.append(f"{where}: {response.text[:200]}")
            return
        kind = response.headers.get("Content-Type", "").split(";")[0]
        documented = str(response.status_code) in operation.definition.raw["responses"]
        if kind == "application/json" and documented:
            try:
                assert_conforms(document, case.method, operation.path, response.status_code,
                                response.json())
            except AssertionError as exc:
                problems.append(f"{where}: {exc}")

    send()
    return sent


async def test_schemathesis_finds_no_server_error(console: Harness):
    document = await console.openapi()
    admin = await console.signed_in("district_admin")
    cookie = admin.session_cookie
    assert cookie
    sent, problems = await asyncio.to_thread(
        fuzz, document, console.url, cookies={SESSION_COOKIE: cookie},
        headers={CSRF_HEADER: admin.csrf, "Origin": console.url})
    assert not problems, "\n".join(problems[:20])
    operations = sum(1 for ops in document["paths"].values() for op in ops.values()
                     if "text/event-stream" not in op["responses"]["200"]["content"])
    assert sent >= operations
    # What only those who answer calls may do (presence, screen-pop), as a family doctor.
    doctor = await console.signed_in("family_doctor")
    sent, problems = await asyncio.to_thread(
        fuzz, document, console.url, cookies={SESSION_COOKIE: doctor.session_cookie},
        headers={CSRF_HEADER: doctor.csrf, "Origin": console.url}, max_examples=10)
    assert not problems, "\n".join(problems[:20])
    # And without a session: every answer documented, none a server error.
    sent, problems = await asyncio.to_thread(fuzz, document, console.url, cookies={}, headers={},
                                             max_examples=5)
    assert not problems, "\n".join(problems[:20])


# A route that fails for some inputs: the fuzzing above must be able to see a 5xx.
FRAGILE = Plugin("fragile")


@FRAGILE.api("GET", "/api/v1/fragile", capability=SIGNED_IN, summary="fails on odd numbers",
             parameters=[query_param("n", {"type": "integer"}, required=True)],
             response={"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}})
async def fragile(request: web.Request) -> web.StreamResponse:
    n = int(request.query["n"])
    if n % 2:
        raise ValueError("odd")
    return json_response({"n": n})


@FRAGILE.api("GET", "/api/v1/fragile/events", capability=SIGNED_IN, summary="an endless stream",
             content_type="text/event-stream")
async def fragile_events(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        while True:  # a heartbeat until the client goes, as a live feed does
            await response.write(b": beat\n\n")
            await asyncio.sleep(0.2)
    except (ConnectionResetError, RuntimeError):
        return response


@pytest.fixture
async def fragile_console(console: Harness, monkeypatch: pytest.MonkeyPatch
                          ) -> AsyncIterator[Harness]:
    monkeypatch.setattr(console_plugins, "PLUGINS", (*console_plugins.PLUGINS, FRAGILE))
    async with open_console(console.pool, console.redis, console.vault, console.district,
                            logins=console.logins, clock=console.clock,
                            redis_url=console.redis_url) as harness:
        yield harness


async def test_the_fuzzing_sees_a_server_error(fragile_console: Harness):
    """…and passes by an endless event stream, which the route check opens for its headers."""
    document = await fragile_console.openapi()
    admin = await fragile_console.signed_in("district_admin")
    _, problems = await asyncio.to_thread(
        fuzz, document, fragile_console.url, cookies={SESSION_COOKIE: admin.session_cookie or ""},
        headers={})
    assert problems and all(p.startswith("GET /api/v1/fragile {'n': ") and "→ 500" in p
                            for p in problems), problems
    stream = await admin.get("/api/v1/fragile/events", read=False)
    assert (stream.status, stream.content_type) == (200, "text/event-stream")
