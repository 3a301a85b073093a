"""What every CSV export of the console shares: the reason asked for (it goes to the audit log)
and the file — UTF-8 with a BOM (Excel reads UTF-8 only with it), every cell formula-safe
(store/spreadsheet.py)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

from store.spreadsheet import csv_writer
from web.app import problem


def export_reason(request: web.Request) -> str:
    """The reason typed for an export; 422 without one of 2–200 characters."""
    reason = request.query.get("reason", "").strip()
    if not 2 <= len(reason) <= 200:
        raise problem(422, "reason_required", "导出需要填写用途（2–200字）")
    return reason


class CsvFile:
    """Rows written as they come; `response` makes the download."""

    def __init__(self, header: Sequence[str]):
        self._buffer = io.StringIO()
        self._buffer.write("\ufeff")
        self._writer = csv_writer(self._buffer)
        self._writer.writerow(header)
        self.rows = 0

    def write(self, values: Iterable[Any]) -> None:
        self._writer.writerow(values)
        self.rows += 1

    def response(self, filename: str) -> web.Response:
        return web.Response(body=self._buffer.getvalue().encode("utf-8"), content_type="text/csv",
                            charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{filename}"'})
