"""`hotline import` (routing/importer.py): CSV lists, all or nothing, over a real PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from routing.directory import Directory
from routing.importer import ImportRejected, import_csv
from routing.numbers import id_check_char
from routing.records import STAFF_MOBILE
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
    path = tmp_path / "missing.csv" if text is None else write_csv(tmp_path, text)
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


async def test_a_file_that_is_not_utf8(district: District, pool: asyncpg.Pool, vault: PiiVault,
                                       tmp_path: Path) -> None:
    # what "CSV (逗号分隔)" of a Chinese Excel writes: GBK
    path = tmp_path / "gbk.csv"
    path.write_bytes(f"{RESIDENTS_HEADER}\r\n{GOOD}\r\n".encode("gbk"))
    with pytest.raises(ImportRejected) as rejected:
        await import_file(pool, vault, "residents", path)
    (problem,) = rejected.value.problems
    assert problem.startswith("line 2: the file is not UTF-8 text")
    assert "CSV UTF-8" in problem


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
