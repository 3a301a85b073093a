"""实时监控 (live board) and 来电弹屏 (screen-pop): calls as they happen, by server-sent events.

Every service node publishes each step of a call through Redis (recordings/live.py); each console
process holds ONE pub/sub subscription (recordings/live_feed.py LiveFeed) and fans the events out
to its browsers. Each browser connection gets only the events of calls in its viewer's scope —
the same scope filter as every other query (LiveFeed.visible → routing/scope.py), asked once per
call and again while the answer is no (a call becomes visible when it is routed or answered).
A `ping` every few seconds lets the page show when its feed is stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import date
from pathlib import Path
from typing import Any

from aiohttp import web

from recordings.caller_card import caller_card
from recordings.figures import day_figures
from recordings.live_feed import LiveFeed
from web.app import console, int_param, json_response, render, scope, viewer
from web.registry import NavItem, Plugin, path_param

PLUGIN = Plugin("board", nav=(NavItem("/board", "实时监控", "board", order=20),),
                templates=str(Path(__file__).parent / "templates"))
FEED = "live_feed"
PING_EVERY_S = 5.0

STATE_NAMES = {"ivr": "语音导航", "ringing": "振铃中", "queued": "排队中", "talking": "通话中"}
PRESENCE_NAMES = {"available": "在线", "dnd": "勿扰", "offline": "离线", "on_call": "通话中",
                  "ringing": "振铃中", "unknown": "未知"}

_FIGURES = {"type": "object", "required": ["offered", "answered", "abandoned"], "properties": {
    "center_id": {"type": ["integer", "null"]}, "center": {"type": ["string", "null"]},
    "offered": {"type": "integer"}, "answered": {"type": "integer"}, "abandoned": {"type": "integer"},
    "answered_pct": {"type": ["number", "null"]}, "abandoned_pct": {"type": ["number", "null"]},
    "avg_answer_s": {"type": ["number", "null"]}, "p90_answer_s": {"type": ["number", "null"]},
    "callbacks_open": {"type": "integer"}, "callbacks_due_1h": {"type": "integer"},
    "callbacks_overdue": {"type": "integer"}}}
BOARD = {"type": "object", "required": ["seq", "taken_at", "calls", "waiting", "presence", "figures"],
         "properties": {
             "seq": {"type": "integer"}, "taken_at": {"type": "string", "format": "date-time"},
             "calls": {"type": "array", "items": {"type": "object", "required": ["call_id", "state"]}},
             "waiting": {"type": "array", "items": {"type": "object"}},
             "presence": {"type": "array", "items": {"type": "object"}},
             "figures": {"type": "object", "required": ["day", "district", "centers"], "properties": {
                 "day": {"type": "string", "format": "date"}, "district": _FIGURES,
                 "centers": {"type": "array", "items": _FIGURES}}},
         }}
CARD = {"type": "object", "required": ["record_id", "caller", "known"], "properties": {
    "record_id": {"type": "integer"}, "caller": {"type": "string"}, "known": {"type": "boolean"},
    "offered_at": {"type": "string", "format": "date-time"}, "route_reason": {"type": "string"},
    "rung_because": {"type": ["string", "null"]}, "resident": {"type": ["object", "null"]},
    "contract": {"type": ["object", "null"]}, "last_calls": {"type": "array"},
    "open_tasks": {"type": "array"},
    "handover_notes": {"type": "array", "items": {
        "type": "object", "required": ["note_id", "written_at", "summary", "follow_up", "urgency", "author"],
        "properties": {"note_id": {"type": "integer"}, "call_id": {"type": "integer"},
                       "written_at": {"type": "string", "format": "date-time"},
                       "summary": {"type": "string"}, "follow_up": {"type": "boolean"},
                       "urgency": {"type": "string", "enum": ["normal", "urgent"]},
                       "author": {"type": "string"}}}}}}


def feed(request: web.Request) -> LiveFeed:
    c = console(request)
    found = c.extras.get(FEED)
    if found is None:
        found = c.extras[FEED] = LiveFeed(c.redis, c.pool, presence=c.presence, url=c.redis_url, now=c.now)
    return found


def _jsonable(value: Any) -> Any:
    if hasattr(value, "as_json"):
        return value.as_json()
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(v) for k, v in value.__dict__.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


async def board_state(request: web.Request) -> dict[str, Any]:
    c, allowed = console(request), scope(request)
    snap = await feed(request).snapshot(scope=allowed)
    today: date = c.now().astimezone(c.tz).date()
    figures = await day_figures(c.pool, allowed, today, now=c.now(), tz=c.tz)
    return {"seq": snap.seq, "taken_at": snap.taken_at.isoformat(),
            "calls": [call.as_json() for call in snap.calls],
            "waiting": [_jsonable(w) for w in snap.waiting],
            "presence": [_jsonable(p) for p in snap.presence],
            "figures": figures.as_json()}


@PLUGIN.page("GET", "/board", capability="board")
async def board_page(request: web.Request) -> web.StreamResponse:
    state = await board_state(request)
    return render(request, "board/board.html", board=state, states=STATE_NAMES, presence_names=PRESENCE_NAMES)


@PLUGIN.api("GET", "/api/v1/board", capability="board",
            summary="calls in progress, callers waiting, staff presence and today's figures", response=BOARD)
async def board_api(request: web.Request) -> web.StreamResponse:
    return json_response(await board_state(request))


class _Visibility:
    """Which calls this viewer may see: the scope filter's answer (LiveFeed.sees, shared by the
    viewers with the same scope), and the calls this browser was told of (an `expired` names
    only a call id: it is passed on only for a call the browser knows)."""

    def __init__(self, request: web.Request):
        self.feed, self.scope = feed(request), scope(request)
        self.sent: set[str] = set()

    async def allows(self, event: dict[str, Any]) -> bool:
        if event.get("type") == "expired":
            return event.get("call_id") in self.sent
        record_id = (event.get("call") or {}).get("record_id")
        if not isinstance(record_id, int) or not await self.feed.sees(self.scope, record_id, event.get("seq")):
            return False
        self.sent.add(event.get("call_id", ""))
        return True


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    return response


async def _send(response: web.StreamResponse, kind: str, data: dict[str, Any]) -> None:
    body = json.dumps(data, ensure_ascii=False, default=str)
    await response.write(f"event: {kind}\ndata: {body}\n\n".encode())


async def _stream(request: web.Request, pick: Any) -> web.StreamResponse:
    """Events `pick` lets through (it returns what to send, or None), with a ping every
    PING_EVERY_S, until the browser goes away."""
    live = feed(request)
    response = await _sse(request)
    async with live.subscribe() as events:
        await _send(response, "hello", {"at": console(request).now().isoformat()})
        while True:
            try:
                event = await events.next(PING_EVERY_S)
            except TimeoutError:
                await _send(response, "ping", {"at": console(request).now().isoformat()})
                continue
            except (ConnectionResetError, asyncio.CancelledError, StopAsyncIteration):
                break  # the browser left, or the console is stopping (the feed closed)
            out = await pick(event)
            if out is not None:
                try:
                    await _send(response, out[0], out[1])
                except ConnectionResetError:
                    break
    return response


@PLUGIN.api("GET", "/api/v1/board/events", capability="board", content_type="text/event-stream",
            summary="server-sent events of the calls in my scope and of my staff's presence (call, presence, resync, ping)",
            response={"type": "string"})
async def board_events(request: web.Request) -> web.StreamResponse:
    visibility = _Visibility(request)
    live = feed(request)
    # the staff whose presence this board shows (a change of anyone else is not told)
    shown = {s.staff_id for center in await live.staff_presence(scope=scope(request))
             for team in center.teams for s in team.staff}

    async def pick(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        if event.get("type") == "resync":
            return "resync", {}
        if event.get("type") == "presence":
            staff_id = event.get("staff_id")
            if staff_id not in shown:
                return None
            return "presence", {"staff_id": staff_id, "state": await live.presence_of(staff_id)}
        if not await visibility.allows(event):
            return None
        return "call", {k: event.get(k) for k in ("seq", "type", "call_id", "at", "call")}

    with contextlib.suppress(ConnectionResetError):
        return await _stream(request, pick)
    return web.Response()


@PLUGIN.api("GET", "/api/v1/me/events", capability="screen_pop", content_type="text/event-stream",
            summary="server-sent events for my softphone: a hotline call rings me (ringing), I answered",
            response={"type": "string"})
async def my_events(request: web.Request) -> web.StreamResponse:
    me = viewer(request).staff_id

    async def pick(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        call = event.get("call") or {}
        record_id = call.get("record_id")
        if event.get("type") == "ringing" and me in (call.get("ringing") or []):
            return "ringing", {"record_id": record_id, "call_id": event.get("call_id")}
        if event.get("type") == "answered" and call.get("staff_id") == me:
            return "answered", {"record_id": record_id, "call_id": event.get("call_id")}
        if event.get("type") == "ended" and call.get("staff_id") == me:
            return "ended", {"record_id": record_id, "call_id": event.get("call_id")}
        return None

    with contextlib.suppress(ConnectionResetError):
        return await _stream(request, pick)
    return web.Response()


async def _card(request: web.Request) -> Any:
    c = console(request)
    found = await caller_card(c.pool, c.vault, scope(request), int_param(request, "call_id"),
                              now=c.now(), tz=c.tz)
    if found is None:
        raise web.HTTPNotFound()
    return found


@PLUGIN.api("GET", "/api/v1/calls/{call_id}/card", capability="screen_pop",
            summary="the caller's card for a call ringing me or in my scope (audited)", response=CARD,
            parameters=[path_param("call_id")])
async def card_api(request: web.Request) -> web.StreamResponse:
    return json_response((await _card(request)).as_json())


@PLUGIN.page("GET", "/calls/{call_id}/card", capability="screen_pop")
async def card_fragment(request: web.Request) -> web.StreamResponse:
    """The card as an HTML fragment the screen-pop puts on whatever page she has open."""
    return render(request, "board/card.html", card=(await _card(request)).as_json())


@PLUGIN.page("GET", "/calls/{call_id}/pop", capability="screen_pop")
async def card_page(request: web.Request) -> web.StreamResponse:
    """The card as the call's own page, while she talks."""
    return render(request, "board/pop.html", card=(await _card(request)).as_json())
