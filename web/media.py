"""Recordings and voicemails to the browser: by id only, streamed with HTTP Range, audited.

The file is found from the database row of an object in the viewer's scope (never from a path
a request names). aiohttp's FileResponse answers Range requests (206, Content-Range), which the
HTML5 audio element uses to seek. Each play is one audit row: the first request of a play
(no Range, or a Range from byte 0) writes it; the seeks that follow do not.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from store.audit import record_read
from web.app import console, viewer


def _starts_a_play(request: web.Request) -> bool:
    ranges = request.headers.get("Range", "")
    return not ranges or ranges.replace(" ", "").startswith("bytes=0-")


async def stream_audio(request: web.Request, path: str, *, subject: str, action: str,
                       download_name: str) -> web.StreamResponse:
    file = Path(path)
    if not await asyncio.to_thread(file.is_file):
        # the row says there is a recording, the disk disagrees: say so, never where it was
        raise web.HTTPGone(reason="recording file missing")
    reason = request.query.get("reason", "")[:200]
    if _starts_a_play(request):
        async with console(request).pool.acquire() as conn:
            await record_read(conn, actor=viewer(request).actor, action=action, subject=subject,
                              reason=reason)
    download = request.query.get("download") == "1"
    disposition = "attachment" if download else "inline"
    response = web.FileResponse(file, headers={
        "Content-Type": "audio/wav",
        "Content-Disposition": f'{disposition}; filename="{download_name}"',
        "Cache-Control": "no-store",
    })
    return response

