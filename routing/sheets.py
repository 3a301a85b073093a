"""A district's spreadsheet as rows of text, whatever Excel saved it as, in bounded memory.

Formats, told apart by the file's first bytes (not its name):
  .xlsx                   a workbook (zip): its first sheet, through openpyxl in read-only mode
  CSV, UTF-8              "CSV UTF-8 (逗号分隔)", with or without a byte-order mark
  CSV, GB18030            plain "CSV (逗号分隔)" of a Chinese Excel: GBK, of which GB18030 is the
                          superset; taken when the file is not valid UTF-8
  UTF-16 with BOM         "Unicode 文本 (Unicode text)": tab-separated
A header line with more tabs than commas makes any of the text forms tab-separated.

Limits, so no file can take the importer's memory (issue 9 §6): the file's size (`max_size`,
checked before reading and again while reading, so a growing file cannot pass), one value
(MAX_FIELD characters), one row (MAX_ROW characters: a line is read at most that far, and a
quoted value spanning lines counts every line). An .xlsx is a zip: its unpacked parts together
may be XLSX_UNPACKED_FACTOR times `max_size` (zip bombs), and its shared strings — the one part
openpyxl holds in memory whole — at most `max_size`. Nothing reads the whole file into memory:
text goes through a TextIOWrapper line by line, a workbook row by row.

The file is opened once and read in several passes (detection, check, write); its SHA-256 is
taken before the first and after the last, so a file changed in place meanwhile is refused
rather than written differently from how it was checked.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import os
import stat
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path
from typing import IO, Any
from xml.etree.ElementTree import ParseError

DEFAULT_MAX_SIZE = 50 * 1024 * 1024
MAX_FIELD = 1024
MAX_ROW = 64 * 1024
XLSX_UNPACKED_FACTOR = 10
_CHUNK = 1024 * 1024

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .xls (Excel 97–2003) and other OLE files


class SheetError(Exception):
    """The file cannot be read as a sheet at all; `problem` says why, in one line."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


def describe_size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")
    if size >= 1024:
        return f"{size / 1024:.1f} KB".replace(".0 KB", " KB")
    return f"{size} bytes"


def parse_size(text: str) -> int:
    """'50MB', '50M', '1.5G', '800k', '1000000' → bytes (powers of 1024); ValueError otherwise."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = 1
    for suffix, f in (("K", 1024), ("M", 1024**2), ("G", 1024**3)):
        if t.endswith(suffix):
            t, factor = t[:-1], f
            break
    value = float(t.strip())  # ValueError on anything else
    if not value > 0 or value * factor > 2**62:
        raise ValueError(f"not a positive size: {text!r}")
    return int(value * factor)


class _Bounded(io.RawIOBase):
    """The file from where it stands, failing once more than `limit` bytes have been read."""

    def __init__(self, raw: IO[bytes], limit: int):
        self._raw = raw
        self._left = limit
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        self._left -= n or 0
        if self._left < 0:
            raise SheetError(f"the file is larger than {describe_size(self._limit)} "
                             "(it grew while it was read); the limit is --max-size")
        return n


class _Lines:
    """Lines of text for csv.reader, none longer than MAX_ROW, nor a record across lines."""

    def __init__(self, text: io.TextIOBase):
        self._text = text
        self.line = 0
        self.pending = 0  # characters of the record being read; reset by the reader per record
        self._record_line = 1

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._text.readline(MAX_ROW + 1)
        if not line:
            raise StopIteration
        self.line += 1
        if self.pending == 0:
            self._record_line = self.line  # where the row starts, as problems count lines
        self.pending += len(line)
        if self.pending > MAX_ROW:
            raise SheetError(f"line {self._record_line}: a row longer than {MAX_ROW:,} characters (a value "
                             f"may have at most {MAX_FIELD:,}): is this the right file?")
        return line


class SheetFile:
    """One open file and how to read it; a context manager. `records()` may run several times."""

    def __init__(self, path: Path, *, max_size: int = DEFAULT_MAX_SIZE):
        self.path = path
        self.max_size = max_size
        try:
            self._file: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise SheetError("there is no such file") from None
        except IsADirectoryError:
            raise SheetError("that is a directory, not a file") from None
        except OSError as exc:
            raise SheetError(f"cannot read the file: {exc.strerror or exc}") from None
        try:
            self._open()
        except BaseException:
            self._file.close()
            raise

    def _open(self) -> None:
        info = os.fstat(self._file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SheetError("not a regular file (a pipe or a device): save the sheet to a file")
        if info.st_size > self.max_size:
            raise SheetError(f"the file has {describe_size(info.st_size)}; the limit is "
                             f"{describe_size(self.max_size)} (--max-size): split it, or raise the "
                             "limit if the file is what you meant")
        start = self._file.read(8)
        self.format = "xlsx" if start.startswith(_ZIP_MAGIC) else "csv"
        if start == _OLE_MAGIC:
            raise SheetError("an .xls workbook (Excel 97–2003) or another OLE file: save it as "
                             ".xlsx or as \"CSV UTF-8 (逗号分隔)\"")
        self.encoding = ""
        self.sha256 = self._scan()
        if self.format == "xlsx":
            self._check_zip()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SheetFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _bounded(self) -> io.BufferedReader:
        self._file.seek(0)
        return io.BufferedReader(_Bounded(self._file, self.max_size), _CHUNK)

    def _scan(self) -> str:
        """The file's SHA-256, and for text its encoding, in one streaming pass."""
        digest = hashlib.sha256()
        reader = self._bounded()
        first = reader.peek(4)[:4]
        candidates: list[str] = []
        if self.format == "csv":
            if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                candidates = ["utf-16"]  # the BOM decides; "utf-16" reads and drops it
            elif len(first) >= 4 and first[1] == first[3] == 0 and first[0] and first[2]:
                candidates = ["utf-16-le"]  # ASCII as UTF-16 without a BOM: h\0e\0
            elif len(first) >= 4 and first[0] == first[2] == 0 and first[1] and first[3]:
                candidates = ["utf-16-be"]
            else:
                candidates = ["utf-8-sig", "gb18030"]
        decoders = {name: codecs.getincrementaldecoder(name)() for name in candidates}
        failed_at: dict[str, int] = {}  # encoding → line of the first byte it cannot read
        newlines = 0
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            for name, decoder in list(decoders.items()):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    failed_at[name] = newlines + chunk.count(b"\n", 0, max(exc.start, 0)) + 1
                    del decoders[name]
            newlines += chunk.count(b"\n")
        for name, decoder in list(decoders.items()):
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                failed_at[name] = newlines + 1
                del decoders[name]
        if candidates:
            # in order of preference: UTF-8 first, as nearly no GBK text is also valid UTF-8
            self.encoding = next((name for name in candidates if name in decoders), "")
            if not self.encoding:
                line = failed_at[candidates[-1]]
                where = f"line {line}: " if not candidates[0].startswith("utf-16") else ""
                raise SheetError(f"{where}the file is neither UTF-8 nor GB18030 (GBK) nor UTF-16 "
                                 "text, nor an .xlsx workbook: save it again as "
                                 "\"CSV UTF-8 (逗号分隔)\" or as .xlsx")
        return digest.hexdigest()

    def unchanged(self) -> bool:
        """Whether the file still has the bytes it had when it was opened."""
        digest = hashlib.sha256()
        reader = self._bounded()
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
        return digest.hexdigest() == self.sha256

    # --- text -------------------------------------------------------------------------------------

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """(line number, values) of each row that is not blank; the header is line 1."""
        if self.format == "xlsx":
            yield from self._xlsx_records()
        else:
            yield from self._text_records()

    def _text_records(self) -> Iterator[tuple[int, list[str]]]:
        text = io.TextIOWrapper(self._bounded(), encoding=self.encoding, newline="")
        lines = _Lines(text)
        try:
            first = next(lines, "")
            delimiter = "\t" if first.count("\t") > first.count(",") else ","
            reader = csv.reader(itertools.chain([first.lstrip("\ufeff")] if first else [], lines),
                                delimiter=delimiter)
            line = 1
            for fields in reader:
                lines.pending = 0
                if any(f.strip() for f in fields):  # Excel writes empty rows as ",,,,"
                    yield line, fields
                line = reader.line_num + 1
        except UnicodeDecodeError:
            # the scan found the whole file decodable: it changed since
            raise SheetError(f"the file is no longer {self.encoding} text: it changed while it "
                             "was imported") from None
        except csv.Error as exc:
            raise SheetError(f"line {line}: not readable as CSV: {exc}") from None

    # --- workbooks --------------------------------------------------------------------------------

    def _check_zip(self) -> None:
        self._file.seek(0)
        try:
            with zipfile.ZipFile(self._file) as z:
                parts = z.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise SheetError(f"not readable as an .xlsx workbook: {exc}") from None
        unpacked = sum(p.file_size for p in parts)
        if unpacked > XLSX_UNPACKED_FACTOR * self.max_size:
            raise SheetError(f"the workbook unpacks to {describe_size(unpacked)}; the limit is "
                             f"{describe_size(XLSX_UNPACKED_FACTOR * self.max_size)} "
                             f"({XLSX_UNPACKED_FACTOR} × --max-size)")
        strings = sum(p.file_size for p in parts if p.filename.lower().endswith("sharedstrings.xml"))
        if strings > self.max_size:
            raise SheetError(f"the workbook's text (sharedStrings.xml) unpacks to "
                             f"{describe_size(strings)}; the limit is {describe_size(self.max_size)} "
                             "(--max-size)")

    def _xlsx_records(self) -> Iterator[tuple[int, list[str]]]:
        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException

        unreadable = (zipfile.BadZipFile, InvalidFileException, KeyError, ParseError, ValueError,
                      TypeError, OSError, EOFError)
        self._file.seek(0)
        try:
            # data_only: what Excel shows (a formula's last value), never the formula itself
            workbook = openpyxl.load_workbook(self._file, read_only=True, data_only=True)
        except unreadable as exc:
            raise SheetError(f"not readable as an .xlsx workbook: {type(exc).__name__}: {exc}") from None
        try:
            if not workbook.worksheets:
                raise SheetError("the workbook has no sheet")
            sheet = workbook.worksheets[0]
            rows = sheet.iter_rows(min_row=1, values_only=True)
            for line in itertools.count(1):
                try:
                    values = next(rows, None)
                except unreadable as exc:
                    raise SheetError(f"row {line}: not readable: {type(exc).__name__}: {exc}") from None
                if values is None:
                    return
                if values.count(None) == len(values):  # cheap for the empty rows openpyxl fills in
                    continue
                fields = [_cell_text(v) for v in values]
                while fields and not fields[-1]:
                    fields.pop()
                if any(f.strip() for f in fields):
                    yield line, fields
        finally:
            workbook.close()


def _cell_text(value: Any) -> str:
    """A cell as the text Excel shows for it (General format)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        # 1.20116199001011E+17, as Excel shows an ID number typed into a General cell: the
        # importer recognizes it and says how to fix the column
        return f"{value:.15G}"
    if isinstance(value, datetime):
        if value.time() == time(0):
            return value.date().isoformat()
        return value.strftime("%Y-%m-%d %H:%M:%S" if value.second else "%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.strftime("%H:%M")
    return str(value)
