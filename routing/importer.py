"""A district's own lists from spreadsheets: residents, staff and the duty roster, all or nothing.

`hotline import residents|staff|roster FILE` reads a file the way Excel saves it (.xlsx, CSV in
UTF-8 or GBK/GB18030, UTF-16 "Unicode text"; English or Chinese headers: docs/import.md, and
routing/sheets.py for the formats and the size limits), checks EVERY row and reports ALL
problems, each with its line number (the header is line 1) and the reason. Only a file without
a single problem is written, in one transaction through routing.records (COPY), so a rejected
file, or one the database refuses halfway, leaves nothing behind.

The file is read twice, streaming, from one open file: the first pass checks every row and keeps
only what the checks across rows need (ID-number hashes, shift times); the second parses it
again and writes it in batches, so a 510 k-row residents list is never in memory, neither as
bytes nor as objects. A file changed between the passes is refused (routing.sheets). Names are
resolved against a few dictionaries loaded up front, never one query per row.

Values are stored as they are, also text starting with = + - @ (a formula to a spreadsheet):
whatever writes them back out to a spreadsheet neutralizes them (store/spreadsheet.py).

Problem messages never carry a whole ID or phone number (PIPL): numbers appear masked.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import islice
from pathlib import Path
from typing import ClassVar, Generic, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import asyncpg

from routing.numbers import (
    DEFAULT_AREA_CODE,
    IdCard,
    InvalidNumber,
    normalize_phone,
    parse_id_number,
)
from routing.records import (
    ID_NUMBER,
    NewResident,
    NewShift,
    NewStaff,
    link_guardians,
    write_residents,
    write_shifts,
    write_staff,
)
from routing.sheets import DEFAULT_MAX_SIZE, MAX_FIELD, SheetError, SheetFile
from store.pii import PiiVault, mask_id_number, mask_phone

# Problems kept to report: a file wrong on every one of a million lines must not fill the
# memory with messages; the first ones show what to fix.
MAX_PROBLEMS = 1000

# Rows per COPY in the second pass: bounds the rows held in Python, as in routing.seed.
WRITE_BATCH = 50_000

# The roles of the staff table, with the Chinese names a district's sheet uses for them.
STAFF_ROLES = {
    "family_doctor": "家庭医生",
    "assistant": "助理",
    "nurse": "护士",
    "night_doctor": "夜间值班医生",
    "agent": "客服",
    "supervisor": "质控",
    "director": "中心主任",
    "district_admin": "区卫健委",
}
_ROLE_OF_NAME = {**{r: r for r in STAFF_ROLES}, **{zh: r for r, zh in STAFF_ROLES.items()}}
# Who may take a duty shift: night doctors, and family doctors on weekend day shifts.
_ROSTERED_ROLES = ("night_doctor", "family_doctor")
# What a roster's scope column says for "the whole district".
_DISTRICT_WIDE = ("", "district", "全区")

# Several phone numbers or conditions in one cell. ';' is the documented one (a comma needs
# quoting in CSV), the others are what people type in Excel anyway.
_LIST_SEPARATORS = re.compile(r"[;；,，/、]")
_DATE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
# 'YYYY-MM-DD HH:MM' and Excel's 'YYYY/M/D H:MM'; anything else goes to datetime.fromisoformat.
_LOCAL_DATETIME = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?")
# What Excel shows for a long number in a General cell: 1.38E+10, 1.20116E+17.
_EXCEL_NUMBER = re.compile(r"\d+(?:\.\d+)?E\+\d+", re.IGNORECASE)


class ImportRejected(Exception):
    """Nothing was imported; `problems` says why, one line each ("line 7: …")."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        shown = "; ".join(self.problems[:3]) + (" …" if len(self.problems) > 3 else "")
        super().__init__(f"nothing was imported, {len(self.problems)} problem(s): {shown}")


async def import_csv(
    pool: asyncpg.Pool, vault: PiiVault, kind: str, path: Path, *, tz: ZoneInfo,
    max_size: int = DEFAULT_MAX_SIZE, area_code: str = DEFAULT_AREA_CODE,
) -> int:
    """Import a residents, staff or roster file (.xlsx or CSV); return the rows written.

    Raises ImportRejected, having written nothing, for any problem in the file or with the data
    already in the database, and for a file over `max_size` bytes. Naive times in a roster are
    in `tz`; local landlines without an area code get `area_code`.
    """
    importer_class = _IMPORTERS.get(kind)
    if importer_class is None:
        raise ValueError(f"cannot import {kind!r}: one of {', '.join(_IMPORTERS)}")
    try:
        sheet = SheetFile(path, max_size=max_size)
    except SheetError as exc:
        raise ImportRejected([exc.problem]) from None
    with sheet:
        return await _import(pool, vault, importer_class, sheet, tz, area_code)


async def _import(pool: asyncpg.Pool, vault: PiiVault, importer_class: type[_Importer], sheet: SheetFile,
                  tz: ZoneInfo, area_code: str) -> int:
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                importer = importer_class(conn, vault, tz, await _Directory.load(conn),
                                          area_code=area_code)
                try:
                    await _check_every_row(importer, sheet)
                    written = await _write_every_row(importer, sheet)
                    if not sheet.unchanged():
                        raise SheetError("the file changed while it was imported")
                except SheetError as exc:
                    raise ImportRejected([exc.problem]) from None
                return written
        except asyncpg.PostgresError as exc:
            # The checks above should leave the database nothing to refuse; this is someone
            # changing the directory meanwhile, or a rule the checks do not know. Only the
            # message: str(exc) adds the DETAIL, which quotes the failing row (names, conditions).
            raise ImportRejected(
                [f"the database refused the rows, nothing was written: {exc.args[0]}"]) from exc


# --- reading the file ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    key: str  # what the code calls the column
    headers: tuple[str, ...]  # the English name first, then the Chinese header of a sheet
    required: bool = False

    @property
    def label(self) -> str:
        return f"{self.headers[0]} ({self.headers[1]})"


def _column_positions(line: int, header: list[str], columns: Sequence[Column]) -> dict[str, int]:
    """Column key → position in a row; ImportRejected naming missing or doubled columns."""
    by_header = {h.casefold(): c for c in columns for h in c.headers}
    positions: dict[str, int] = {}
    problems = []
    for i, title in enumerate(header):
        column = by_header.get(title.strip().casefold().replace(" ", "_"))
        if column is None:
            continue  # a column this import does not read (序号, 备注, …)
        if column.key in positions:
            problems.append(f"line {line}: two columns are {column.label}: "
                            f"{header[positions[column.key]].strip()!r} and {title.strip()!r}")
        positions[column.key] = i
    missing = [c.label for c in columns if c.required and c.key not in positions]
    if missing:
        problems.append(f"line {line}: missing column(s) {', '.join(missing)}")
    if problems:
        raise ImportRejected(problems)
    return positions


class _Problems:
    """Problems found so far, reported sorted by line; at most MAX_PROBLEMS kept."""

    def __init__(self) -> None:
        self._found: list[tuple[int, str]] = []
        self._more = 0

    def add(self, line: int, reason: str) -> None:
        if len(self._found) < MAX_PROBLEMS:
            self._found.append((line, reason))
        else:
            self._more += 1

    def __bool__(self) -> bool:
        return bool(self._found)

    def reject(self) -> NoReturn:
        ordered = sorted(self._found, key=lambda p: p[0])  # stable: a line's own order stays
        shown = [f"line {line}: {reason}" for line, reason in ordered]
        if self._more:
            shown.append(f"… and {self._more} more problem(s) not shown: fix these and import again")
        raise ImportRejected(shown)


class _Row:
    """One data row: its line, its trimmed values by column key, and whether it is clean."""

    __slots__ = ("line", "ok", "_values", "_columns", "_problems")

    def __init__(self, line: int, values: dict[str, str], columns: dict[str, Column],
                 problems: _Problems):
        self.line = line
        self.ok = True
        self._values = values
        self._columns = columns
        self._problems = problems

    def __getitem__(self, key: str) -> str:
        return self._values.get(key, "")

    def label(self, key: str) -> str:
        return self._columns[key].label

    def problem(self, reason: str) -> None:
        self.ok = False
        self._problems.add(self.line, reason)

    def required(self, key: str) -> str:
        value = self[key]
        if not value:
            self.problem(f"{self.label(key)} is empty")
        return value


def _too_long(fields: list[str]) -> str | None:
    for i, value in enumerate(fields):
        if len(value) > MAX_FIELD:
            return (f"the value in column {i + 1} has {len(value):,} characters; a value may have "
                    f"at most {MAX_FIELD:,}")
    return None


def _rows(sheet: SheetFile, columns: Sequence[Column], problems: _Problems) -> Iterator[_Row]:
    records = sheet.records()
    first = next(records, None)
    if first is None:
        raise ImportRejected(["the file is empty"])
    header_line, header = first
    if (too_long := _too_long(header)) is not None:
        raise ImportRejected([f"line {header_line}: {too_long}: is this the right file?"])
    positions = _column_positions(header_line, header, columns)
    by_key = {c.key: c for c in columns}
    for line, fields in records:
        # Excel writes every row as wide as the header: a longer one has a comma out of quotes,
        # and every value after it sits in the wrong column.
        if len(fields) > len(header):
            problems.add(line, f"{len(fields)} values but the header has {len(header)} columns: "
                         + ("a value right of the last column with a header"
                            if sheet.format == "xlsx" else
                            "a comma inside a value must be quoted (or separate the values with ';')"))
            continue
        if (too_long := _too_long(fields)) is not None:
            problems.add(line, too_long)
            continue
        values = {key: fields[i].strip() if i < len(fields) else ""
                  for key, i in positions.items()}
        yield _Row(line, values, by_key, problems)


# --- values --------------------------------------------------------------------------------------

def _split(text: str) -> list[str]:
    return [part.strip() for part in _LIST_SEPARATORS.split(text) if part.strip()]


def _phone(row: _Row, text: str, area_code: str) -> str | None:
    if _EXCEL_NUMBER.fullmatch(text):
        row.problem(f"phone number {mask_phone(text)}: Excel turned it into a number; "
                    "format the column as text")
        return None
    try:
        return normalize_phone(text, area_code)
    except InvalidNumber as exc:
        if text.isdigit() and 9 <= len(text) <= 11 and text[0] != "1":
            try:  # 2225320001: a landline whose leading 0 Excel dropped
                normalize_phone("0" + text, area_code)
                row.problem(f"landline {mask_phone(text)} lost its leading 0: Excel turned it into "
                            "a number; format the column as text")
                return None
            except InvalidNumber:
                pass
        row.problem(str(exc))  # routing.numbers masks the number it quotes
        return None


def _id_card(row: _Row, key: str, what: str) -> IdCard | None:
    text = row[key]
    masked = mask_id_number(text.upper())
    if "E+" in text.upper():
        row.problem(f"{what} {masked}: Excel turned it into a number; format the column as text")
        return None
    try:
        return parse_id_number(text)
    except InvalidNumber as exc:
        row.problem(f"{what} {masked}: {str(exc).removeprefix('ID number ')}")
        return None


def _date(row: _Row, key: str) -> date | None:
    text = row[key]
    if not text:
        return None
    match = _DATE.fullmatch(text)
    if match:
        try:
            return date(*(int(g) for g in match.groups()))
        except ValueError:
            pass  # 2025-02-30
    row.problem(f"{row.label(key)} {text!r} is not a date (YYYY-MM-DD)")
    return None


def _datetime(row: _Row, key: str, tz: ZoneInfo) -> datetime | None:
    text = row.required(key)
    if not text:
        return None
    match = _LOCAL_DATETIME.fullmatch(text)
    try:
        at = (datetime(*(int(g) for g in match.groups(default="0"))) if match
              else datetime.fromisoformat(text))
    except ValueError:
        row.problem(f"{row.label(key)} {text!r} is not a time (YYYY-MM-DD HH:MM)")
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=tz)


# --- the directory the rows refer to -------------------------------------------------------------

@dataclass(frozen=True)
class _Directory:
    """Names and staff numbers → ids, loaded once: a district has dozens of centers, not more."""

    districts: dict[str, int]                        # name → id
    centers: dict[tuple[int, str], int]              # (district id, name) → id
    centers_by_name: dict[str, list[int]]            # name → ids, in any district
    teams: dict[tuple[int, str], int]                # (center id, name) → id
    staff: dict[str, asyncpg.Record]                 # staff_no → id, role, district_id, …

    @classmethod
    async def load(cls, conn: asyncpg.Connection) -> _Directory:
        centers = await conn.fetch("SELECT id, district_id, name FROM centers")
        centers_by_name: dict[str, list[int]] = {}
        for c in centers:
            centers_by_name.setdefault(c["name"], []).append(c["id"])
        return cls(
            districts={r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM districts")},
            centers={(c["district_id"], c["name"]): c["id"] for c in centers},
            centers_by_name=centers_by_name,
            teams={(r["center_id"], r["name"]): r["id"]
                   for r in await conn.fetch("SELECT id, center_id, name FROM teams")},
            staff={r["staff_no"]: r for r in await conn.fetch(
                "SELECT id, staff_no, role, district_id, center_id, team_id, left_on FROM staff")},
        )


# --- the importers -------------------------------------------------------------------------------

R = TypeVar("R")


@dataclass
class _Importer(ABC, Generic[R]):
    """One kind of file: its columns, how a row becomes a record, and how records are written."""

    columns: ClassVar[tuple[Column, ...]]

    conn: asyncpg.Connection
    vault: PiiVault
    tz: ZoneInfo
    directory: _Directory
    problems: _Problems = field(default_factory=_Problems)
    area_code: str = DEFAULT_AREA_CODE

    @abstractmethod
    def parse(self, row: _Row) -> R | None:
        """The row's record, or None after reporting its problems on the row.

        Runs twice per row (check, then write) and must give the same answer both times.
        """

    def remember(self, row: _Row, record: R) -> None:  # noqa: B027 - optional hook
        """First pass: note what the checks across rows need."""

    async def check_across_rows(self) -> None:  # noqa: B027 - optional hook
        """First pass, after the last row: duplicates and overlaps in the file and the database."""

    @abstractmethod
    async def write(self, batch: list[R]) -> None: ...

    async def finish(self) -> None:  # noqa: B027 - optional hook
        """After the last batch is written."""

    # lookups shared by several kinds

    def _team(self, row: _Row, center_id: int) -> int | None:
        team_id = self.directory.teams.get((center_id, row["team"]))
        if team_id is None:
            row.problem(f"unknown team {row['team']!r} in center {row['center']!r}")
        return team_id

    def _center_in(self, row: _Row, key: str, district_id: int, where: str) -> int | None:
        center_id = self.directory.centers.get((district_id, row[key]))
        if center_id is None:
            row.problem(f"unknown center {row[key]!r} in {where}")
        return center_id

    def _doctor(self, row: _Row, key: str, roles: Sequence[str]) -> asyncpg.Record | None:
        staff_no = row[key]
        member = self.directory.staff.get(staff_no)
        if member is None:
            row.problem(f"unknown doctor {staff_no!r}")
        elif member["role"] not in roles:
            row.problem(f"{staff_no} has role {member['role']}, not {' or '.join(roles)}")
            return None
        return member


async def _check_every_row(importer: _Importer[R], sheet: SheetFile) -> None:
    rows = 0
    for row in _rows(sheet, importer.columns, importer.problems):
        rows += 1
        record = importer.parse(row)
        if record is not None:
            importer.remember(row, record)
    if rows == 0 and not importer.problems:
        raise ImportRejected(["the file has a header but no rows"])
    await importer.check_across_rows()
    if importer.problems:
        importer.problems.reject()


async def _write_every_row(importer: _Importer[R], sheet: SheetFile) -> int:
    def records() -> Iterator[R]:
        for row in _rows(sheet, importer.columns, importer.problems):
            record = importer.parse(row)
            if record is None:  # the same bytes and directory parse the same way twice
                raise SheetError("the file changed while it was imported")
            yield record

    written = 0
    for batch in _batches(records(), WRITE_BATCH):
        await importer.write(batch)
        written += len(batch)
    await importer.finish()
    return written


def _batches(items: Iterable[R], size: int) -> Iterator[list[R]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


@dataclass(frozen=True)
class _ResidentRow:
    resident: NewResident
    guardian: IdCard | None
    guardian_relation: str


@dataclass(frozen=True)
class _GuardianLink:
    line: int
    child: bytes      # ID-number hashes
    guardian: bytes
    guardian_masked: str
    relation: str


@dataclass
class _Residents(_Importer[_ResidentRow]):
    columns = (
        Column("name", ("name", "姓名"), required=True),
        Column("id_number", ("id_number", "身份证号"), required=True),
        Column("phones", ("phones", "联系电话"), required=True),
        Column("center", ("center", "社区卫生服务中心"), required=True),
        Column("team", ("team", "团队")),
        Column("doctor", ("doctor", "家庭医生工号")),
        Column("contract_start", ("contract_start", "签约开始")),
        Column("contract_end", ("contract_end", "签约结束")),
        Column("conditions", ("conditions", "慢病")),
        Column("guardian_id_number", ("guardian_id_number", "监护人身份证号")),
        Column("guardian_relation", ("guardian_relation", "监护关系")),
    )

    _line_of: dict[bytes, int] = field(default_factory=dict)  # ID hash → first line with it
    _links: list[_GuardianLink] = field(default_factory=list)
    _linked: set[bytes] = field(default_factory=set)          # ID hashes of everyone linked
    _id_of: dict[bytes, int] = field(default_factory=dict)    # … and their resident ids

    def _hash(self, card: IdCard) -> bytes:
        return self.vault.lookup_hash(ID_NUMBER, card.number)

    def parse(self, row: _Row) -> _ResidentRow | None:
        name = row.required("name")
        card = _id_card(row, "id_number", "ID number") if row.required("id_number") else None
        phone_texts = _split(row["phones"])
        if not phone_texts:
            row.problem(f"{row.label('phones')} has no phone number")
        phones = [_phone(row, text, self.area_code) for text in phone_texts]
        center_id = self._center(row)
        doctor_id, team_id, contract = self._contract(row, center_id)
        guardian = None
        if row["guardian_id_number"]:
            guardian = _id_card(row, "guardian_id_number", "guardian ID number")
            if guardian is not None and card is not None and guardian.number == card.number:
                row.problem("a resident cannot be their own guardian")
        elif row["guardian_relation"]:
            row.problem(f"{row.label('guardian_relation')} without "
                        f"{row.label('guardian_id_number')}")
        if not row.ok or card is None or center_id is None:
            return None
        resident = NewResident(
            name, card, center_id, list(dict.fromkeys(p for p in phones if p is not None)),
            doctor_id, team_id, contract, _split(row["conditions"]))
        return _ResidentRow(resident, guardian, row["guardian_relation"])

    def _center(self, row: _Row) -> int | None:
        name = row.required("center")
        ids = self.directory.centers_by_name.get(name, [])
        if name and not ids:
            row.problem(f"unknown center {name!r}")
        elif len(ids) > 1:
            row.problem(f"center {name!r} exists in {len(ids)} districts; cannot tell which")
        return ids[0] if len(ids) == 1 else None

    def _contract(
        self, row: _Row, center_id: int | None
    ) -> tuple[int | None, int | None, tuple[date, date] | None]:
        """(doctor id, team id, (first day, last day)) of the contract, or Nones without one."""
        starts, ends = _date(row, "contract_start"), _date(row, "contract_end")
        team_id = self._team(row, center_id) if row["team"] and center_id is not None else None
        if not row["doctor"]:
            if row["contract_start"] or row["contract_end"]:
                row.problem(f"contract dates without {row.label('doctor')}")
            if row["team"]:  # residents.team does not exist: the team is the contract's
                row.problem(f"a team without a contract: give {row.label('doctor')} and the "
                            "contract dates too")
            return None, None, None
        doctor = self._doctor(row, "doctor", ("family_doctor",))
        if not (row["contract_start"] and row["contract_end"]):
            row.problem(f"a contract with {row['doctor']} needs {row.label('contract_start')} "
                        f"and {row.label('contract_end')}")
        elif starts is not None and ends is not None and ends < starts:
            row.problem(f"the contract ends ({ends}) before it starts ({starts})")
        if doctor is None or starts is None or ends is None:
            return None, None, None
        if team_id is not None and doctor["team_id"] not in (None, team_id):
            row.problem(f"doctor {row['doctor']} is not in team {row['team']!r}")
        return doctor["id"], team_id or doctor["team_id"], (starts, ends)

    def remember(self, row: _Row, record: _ResidentRow) -> None:
        key = self._hash(record.resident.card)
        first = self._line_of.setdefault(key, row.line)
        if first != row.line:
            self.problems.add(row.line, f"ID number {mask_id_number(record.resident.card.number)} "
                                    f"is also on line {first}")
        if record.guardian is not None:
            self._links.append(_GuardianLink(
                row.line, key, self._hash(record.guardian), mask_id_number(record.guardian.number),
                record.guardian_relation))

    async def check_across_rows(self) -> None:
        already = await self.conn.fetch(
            "SELECT r.id_number_hash, r.id_number_masked"
            " FROM unnest($1::bytea[]) AS f(hash) JOIN residents r ON r.id_number_hash = f.hash",
            list(self._line_of))
        for r in already:
            self.problems.add(self._line_of[r["id_number_hash"]],
                              f"ID number {r['id_number_masked']} is already in the database")
        # Guardians not in the file must be residents already; their ids are known now.
        self._linked = {link.child for link in self._links} | {link.guardian for link in self._links}
        outside = list(self._linked - self._line_of.keys())
        self._id_of = {r["id_number_hash"]: r["id"] for r in await self.conn.fetch(
            "SELECT id, id_number_hash FROM residents WHERE id_number_hash = ANY($1::bytea[])",
            outside)}
        for link in self._links:
            if link.guardian not in self._line_of and link.guardian not in self._id_of:
                self.problems.add(link.line, f"guardian ID number {link.guardian_masked} is "
                                             "neither in this file nor in the database")

    async def write(self, batch: list[_ResidentRow]) -> None:
        residents = [r.resident for r in batch]
        written = await write_residents(self.conn, self.vault, residents)
        if self._linked:
            self._id_of.update((key, rid) for key, rid in written.by_id_hash(self.vault, residents).items()
                               if key in self._linked)

    async def finish(self) -> None:
        await link_guardians(self.conn, [
            (self._id_of[link.child], self._id_of[link.guardian], link.relation)
            for link in self._links])


@dataclass
class _Staff(_Importer[NewStaff]):
    columns = (
        Column("staff_no", ("staff_no", "工号"), required=True),
        Column("name", ("name", "姓名"), required=True),
        Column("role", ("role", "角色"), required=True),
        Column("district", ("district", "区"), required=True),
        Column("center", ("center", "社区卫生服务中心")),
        Column("team", ("team", "团队")),
        Column("sip_uri", ("sip_uri", "软电话")),
        Column("mobile", ("mobile", "手机")),
    )

    _line_of: dict[str, int] = field(default_factory=dict)  # staff_no → first line with it

    def parse(self, row: _Row) -> NewStaff | None:
        staff_no = row.required("staff_no")
        if staff_no in self.directory.staff:
            row.problem(f"staff number {staff_no!r} is already in the database")
        name = row.required("name")
        role = _ROLE_OF_NAME.get(row.required("role").casefold())
        if row["role"] and role is None:
            row.problem(f"unknown role {row['role']!r}: one of "
                        + ", ".join(f"{r} ({zh})" for r, zh in STAFF_ROLES.items()))
        district_id = self.directory.districts.get(row.required("district"))
        if row["district"] and district_id is None:
            row.problem(f"unknown district {row['district']!r}")
        center_id = team_id = None
        if row["center"] and district_id is not None:
            center_id = self._center_in(row, "center", district_id, f"district {row['district']!r}")
        if row["team"] and not row["center"]:
            row.problem(f"a team needs its {row.label('center')}")
        elif row["team"] and center_id is not None:
            team_id = self._team(row, center_id)
        sip_uri = row["sip_uri"] or None
        if sip_uri is not None and (not sip_uri.startswith("sip:") or sip_uri == "sip:"):
            row.problem(f"{row.label('sip_uri')} {sip_uri!r} must start with 'sip:'")
        mobile = _phone(row, row["mobile"], self.area_code) if row["mobile"] else None
        if not row.ok or role is None or district_id is None:
            return None
        return NewStaff(staff_no, name, role, district_id, center_id, team_id, sip_uri, mobile)

    def remember(self, row: _Row, record: NewStaff) -> None:
        first = self._line_of.setdefault(record.staff_no, row.line)
        if first != row.line:
            self.problems.add(row.line, f"staff number {record.staff_no!r} is also on line {first}")

    async def write(self, batch: list[NewStaff]) -> None:
        await write_staff(self.conn, self.vault, batch)


# 值班: rings first for the center; 备班 (二线): after every duty doctor. A district-wide shift is
# a backup unless the file says otherwise.
_SHIFT_KINDS = {"duty": "duty", "值班": "duty", "backup": "backup", "备班": "backup", "二线": "backup"}

_ROSTER_OVERLAPS_SQL = """
SELECT f.line, d.starts_at, d.ends_at
FROM unnest($1::int[], $2::int[], $3::timestamptz[], $4::timestamptz[])
     AS f(line, doctor_id, starts_at, ends_at)
JOIN duty_shifts d ON d.doctor_id = f.doctor_id
                  AND tstzrange(d.starts_at, d.ends_at) && tstzrange(f.starts_at, f.ends_at)
ORDER BY f.line, d.starts_at
"""


@dataclass
class _Roster(_Importer[NewShift]):
    columns = (
        Column("doctor", ("doctor", "医生工号"), required=True),
        Column("starts_at", ("starts_at", "开始"), required=True),
        Column("ends_at", ("ends_at", "结束"), required=True),
        Column("scope", ("scope", "范围")),
        Column("kind", ("kind", "类型")),
        Column("ring_order", ("ring_order", "顺序")),
    )

    _shifts: list[tuple[int, str, NewShift]] = field(default_factory=list)  # line, staff_no, …

    def _when(self, at: datetime) -> str:
        return f"{at.astimezone(self.tz):%Y-%m-%d %H:%M}"

    def parse(self, row: _Row) -> NewShift | None:
        doctor = self._doctor(row, "doctor", _ROSTERED_ROLES) if row.required("doctor") else None
        starts, ends = _datetime(row, "starts_at", self.tz), _datetime(row, "ends_at", self.tz)
        if starts is not None and ends is not None and ends <= starts:
            row.problem(f"the shift ends ({self._when(ends)}) before it starts ({self._when(starts)})")
        if doctor is None:
            return None
        if doctor["left_on"] is not None and starts is not None \
                and doctor["left_on"] <= starts.astimezone(self.tz).date():
            row.problem(f"doctor {row['doctor']} left on {doctor['left_on']}")
        center_id = None
        if row["scope"].casefold() not in _DISTRICT_WIDE:
            center_id = self._center_in(row, "scope", doctor["district_id"],
                                        f"the district of doctor {row['doctor']}")
        kind_text = row["kind"].strip().casefold()
        kind = _SHIFT_KINDS.get(kind_text, "backup" if center_id is None else "duty") if kind_text \
            else ("backup" if center_id is None else "duty")
        if kind_text and kind_text not in _SHIFT_KINDS:
            row.problem(f"{row.label('kind')} {row['kind']!r} is not one of 值班/duty, 备班/backup")
        ring_position = 1
        if row["ring_order"].strip():
            text = row["ring_order"].strip()
            if not text.isdigit() or not 1 <= int(text) <= 9:
                row.problem(f"{row.label('ring_order')} {text!r} must be a number from 1 to 9"
                            " (equal numbers ring together)")
            else:
                ring_position = int(text)
        if not row.ok or starts is None or ends is None:
            return None
        return NewShift(doctor["id"], doctor["district_id"], center_id, starts, ends, kind, ring_position)

    def remember(self, row: _Row, record: NewShift) -> None:
        self._shifts.append((row.line, row["doctor"], record))

    async def check_across_rows(self) -> None:
        # In the file: a sweep per doctor by start time against the shift ending last so far.
        latest: dict[int, tuple[int, NewShift]] = {}
        for line, staff_no, shift in sorted(
                self._shifts, key=lambda s: (s[2].doctor_id, s[2].starts_at, s[0])):
            before = latest.get(shift.doctor_id)
            if before is not None and shift.starts_at < before[1].ends_at:
                self.problems.add(line, f"doctor {staff_no}'s shift overlaps the one on line "
                                        f"{before[0]}")
            if before is None or shift.ends_at > before[1].ends_at:
                latest[shift.doctor_id] = (line, shift)
        # In the database: the exclusion constraint's own test, so the two cannot disagree.
        lines = {line: staff_no for line, staff_no, _ in self._shifts}
        for r in await self.conn.fetch(
                _ROSTER_OVERLAPS_SQL, [line for line, _, _ in self._shifts],
                [s.doctor_id for _, _, s in self._shifts], [s.starts_at for _, _, s in self._shifts],
                [s.ends_at for _, _, s in self._shifts]):
            self.problems.add(r["line"], f"doctor {lines[r['line']]}'s shift overlaps one already "
                                         f"on the roster ({self._when(r['starts_at'])} – "
                                         f"{self._when(r['ends_at'])})")

    async def write(self, batch: list[NewShift]) -> None:
        await write_shifts(self.conn, batch)


_IMPORTERS: dict[str, type[_Importer]] = {
    "residents": _Residents,
    "staff": _Staff,
    "roster": _Roster,
}
