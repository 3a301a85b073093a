"""Demo and synthetic districts: the directory data the hotline is shown, tested and measured with.

Both write through routing.records (COPY; PII encrypted, hashed and masked there) inside ONE
transaction, so a failed seed leaves nothing behind, and both refuse a district that is already
loaded (AlreadySeeded) rather than adding a second copy. The data come from random.Random with a
fixed seed: the same `today` (and for synthetic districts the same `seed`) gives the same people,
numbers and roster every time. Only the AES-GCM nonces differ from run to run.

seed_demo — 滨海新区 (Tianjin Binhai New Area, area code 022), three pilot community health
centers (社区卫生服务中心): 北塘街 (3 teams, 120 residents), 寨上朝阳 (3 teams, 100), 古林街
(2 teams, 80). Each team (e.g. 北塘街一团队) is one family doctor and one assistant; each center also
has 2 night duty doctors, a call-center agent, a supervisor and a director. The district has
2 night duty doctors of its own (the backup shift), 2 agents (center NULL: the district duty desk)
and one admin. Residents live in households: elderly couples and people living alone (often on a
shared landline), young families whose children (< 14 years) have their parents as guardians and
are reachable at the mother's numbers, working-age adults. About 85 % have a contract in force,
10 % an expired one, 5 % none; chronic conditions (高血压, 糖尿病, 冠心病, 慢阻肺, …) by age.

Well-known demo residents (README, scripts/demo.sh, tests):
    张桂兰  13800000001, landline 02225320001 — 北塘街; own doctor: the first doctor of 北塘街
            (北塘街一团队, sip:1001@127.0.0.1); 高血压, 糖尿病; contract today-300 … today+65
    刘建国  13800000002 — 寨上朝阳; contract ended 35 days ago, so day calls go to the duty desk
    陈静    13800000003, landline 02225320003 — 古林街 (古林街一团队); guardian (母亲) of
    刘子涵  born 2019-06-01, a child reachable at his mother's two numbers

Softphone extensions, sip:<extension>@127.0.0.1 in the demo (its PBX listens on loopback) and
sip:<extension>@synthetic<seed>.invalid in a synthetic district (nobody's softphone):
    1001…  family doctors (家庭医生) in team order
    2001…  assistants (助理) in the same order: team n has doctor 100n and assistant 200n
    3001…  night duty doctors (夜间值班医生): the centers' in center order, then the district's
    4001…  call-center agents (客服): one per center in center order, then the district desk
Hotline numbers (hotline_lines): `hotline` for the whole district, and each center's own
extension 8001… in center order (Kamailio hands 8000–8999 to the service).
Supervisors, directors and the district admin work in the web console and have no extension.
Staff numbers (工号) are <district prefix><4 digits> in the same order: BH0001… in the demo,
S<seed>-0001… in a synthetic district.

Roster (duty_shifts), for the demo and synthetic districts alike: every night from the night
before `today` (so this morning until 08:00 is covered too) through the night starting on
today+29, each center has a night shift 17:00 → 08:00 (the center's night doctors in turn) and
the district a backup shift (the district's night doctors in turn); on Saturdays and Sundays each
center also has a day shift 08:00 → 17:00, taken by its family doctors in turn. Public holidays
are not rostered by default; seed_synthetic takes `roster_days` (e.g. 365 for a year of roster)
and `holidays` (dates whose daytime is rostered like a weekend day), and
extend_synthetic_roster brings a district seeded with a shorter roster up to that length.

seed_synthetic — the district at real size for benchmarks: "合成区<seed>", one family doctor per
~2 500 residents, 8 teams per center (510 000 residents: 204 teams in 26 centers), staff and roster
as in the demo. Resident i is reachable at synthetic_phone(seed, i), so a benchmark can call as a
known resident without reading the database; some also have a landline or a second mobile.
Synthetic ID numbers use region codes 9xxxxx, which no real ID card has.
"""

from __future__ import annotations

import math
import random
import time as clock
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from itertools import accumulate
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from routing.calendar import WorkingCalendar
from routing.numbers import IdCard, id_check_char
from routing.records import (
    NewResident,
    NewShift,
    NewStaff,
    link_guardians,
    write_residents,
    write_shifts,
    write_staff,
)
from store.pii import PiiVault

log = structlog.get_logger("routing.seed")

DEMO_DISTRICT = "滨海新区"
DEMO_RANDOM_SEED = 20_240_601
ROSTER_DAYS = 30
# The default service hours (DESIGN "Time"); the seeded roster does not follow other settings.
DAY_STARTS = time(8)
DAY_ENDS = time(17)
RESIDENTS_PER_DOCTOR = 2_500
TEAMS_PER_CENTER = 8
# Synthetic residents per COPY: bounds the rows held in Python (510 k load: ~140 MB peak RSS).
SYNTHETIC_BATCH = 50_000


class SeedError(Exception):
    """The seed cannot be loaded; the message says why."""


class AlreadySeeded(SeedError):
    """The district is already in the database; nothing was written."""


def synthetic_district_name(seed: int) -> str:
    return f"合成区{seed}"


# --- numbers -----------------------------------------------------------------------------------

# Mobile numbers 13x, 15x, 18x and 19x: 4 × 10⁹ numbers. An odd multiplier that is no multiple
# of 5 is coprime with 4 × 10⁹, so i ↦ (i·M + offset) mod 4 × 10⁹ never gives two residents the
# same number, and yet consecutive residents get unrelated-looking numbers.
_MOBILE_SECOND_DIGITS = "3589"
_MOBILE_SPACE = len(_MOBILE_SECOND_DIGITS) * 10**9
_MOBILE_MULTIPLIER = 2_654_435_761
_LINES_PER_KIND = _MOBILE_SPACE // 2  # line 0 (main mobile) and line 1 (second mobile)
# Tianjin landlines: 022 + 8 digits starting 2–8 (7 × 10⁷); 48 271 is coprime with 7 × 10⁷.
_LANDLINE_SPACE = 70_000_000
_LANDLINE_MULTIPLIER = 48_271
_SEED_OFFSET = 1_000_003


def synthetic_phone(seed: int, i: int, line: int = 0) -> str:
    """The mobile number of synthetic resident i (line 0: the one they call from; 1: a second)."""
    if not 0 <= i < _LINES_PER_KIND or line not in (0, 1):
        raise ValueError(f"no synthetic mobile for resident {i}, line {line}")
    x = ((line * _LINES_PER_KIND + i) * _MOBILE_MULTIPLIER + seed * _SEED_OFFSET) % _MOBILE_SPACE
    return f"1{_MOBILE_SECOND_DIGITS[x // 10**9]}{x % 10**9:09d}"


def synthetic_landline(seed: int, i: int) -> str:
    """The landline of synthetic resident i, whether or not that resident was given one."""
    x = (i * _LANDLINE_MULTIPLIER + seed * _SEED_OFFSET) % _LANDLINE_SPACE
    return f"022{20_000_000 + x}"


_MOBILE_PREFIXES = ("130", "131", "132", "135", "136", "137", "138", "139", "150", "151", "152",
                    "155", "156", "157", "158", "159", "176", "177", "180", "182", "185", "186",
                    "187", "188", "189", "199")
# Binhai (former Tanggu, Hangu, Dagang) exchanges.
_LANDLINE_EXCHANGES = ("2532", "2530", "6620", "6631", "6328", "2579", "5981", "6999")


class _PhoneBook:
    """Random but unique mobile and landline numbers, never one reserved for a known person."""

    def __init__(self, rng: random.Random, reserved: Sequence[str] = ()):
        self._rng = rng
        self._used = set(reserved)

    def _unique(self, make: Callable[[], str]) -> str:
        while (number := make()) in self._used:
            pass
        self._used.add(number)
        return number

    def mobile(self) -> str:
        return self._unique(
            lambda: self._rng.choice(_MOBILE_PREFIXES) + f"{self._rng.randrange(10**8):08d}")

    def landline(self) -> str:
        return self._unique(
            lambda: "022" + self._rng.choice(_LANDLINE_EXCHANGES) + f"{self._rng.randrange(10**4):04d}")


class _IdNumbers:
    """Resident ID numbers of one region, unique by construction.

    The 3-digit sequence code after the birth date is a 2-digit station (派出所) code and a digit
    that is odd for men, even for women. The k-th person of one sex born on one day gets station
    (k // 5 · 37 + 23) mod 90 — a permutation of 00–89, so codes look spread, never repeat — and
    sex digit 2 · (k mod 5) (+1 for men). Stations 90–99 are left for fixed, well-known people.
    """

    _PER_DAY_AND_SEX = 90 * 5

    def __init__(self, region: str):
        self._region = region
        self._issued: dict[tuple[date, str], int] = {}

    def issue(self, birth: date, sex: str) -> IdCard:
        k = self._issued.get((birth, sex), 0)
        if k >= self._PER_DAY_AND_SEX:
            raise SeedError(f"more than {self._PER_DAY_AND_SEX} residents of one sex born on {birth}")
        self._issued[(birth, sex)] = k + 1
        station = (k // 5 * 37 + 23) % 90
        return id_card(self._region, birth, f"{station:02d}{2 * (k % 5) + (sex == 'M')}")


def id_card(region: str, birth: date, sequence: str) -> IdCard:
    """The ID card with this 6-digit region, birth date and 3-digit sequence code."""
    first17 = f"{region}{birth:%Y%m%d}{sequence}"
    return IdCard(first17 + id_check_char(first17), birth, "M" if int(sequence[-1]) % 2 else "F")


# --- people ------------------------------------------------------------------------------------

# The most common one-character surnames, most frequent first; the weights fall with rank.
_SURNAMES = ("王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋"
             "蔡贾丁魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙万段")
_SURNAME_CUM_WEIGHTS = tuple(accumulate(max(100 - 3 * i, 8) for i in range(len(_SURNAMES))))

# Given names by generation: born before 1965, 1965–1989, from 1990. Keys: (generation, sex).
_GIVEN_NAMES = {
    (0, "F"): "桂兰 秀英 玉兰 淑珍 凤英 桂英 秀兰 玉珍 淑兰 凤兰 桂芳 秀珍 玉梅 素珍 兰英 淑芬 玉芬 秀云".split(),
    (0, "M"): "建国 国强 志刚 德明 保国 振华 福生 永成 文华 玉山 树林 长顺 宝华 金生 广林 国庆 俊明 德胜".split(),
    (1, "F"): "丽 静 敏 燕 艳 红梅 丽娜 海燕 晓红 秀梅 慧 晓燕 丽华 春燕 红霞 雪梅 丽君 小红".split(),
    (1, "M"): "伟 勇 军 磊 强 涛 斌 海涛 建华 志强 立新 永刚 春雷 卫东 红军 海波 建军 晓东".split(),
    (2, "F"): "婷 雪 欣 悦 佳怡 雨涵 思琪 梦瑶 诗涵 欣怡 梓涵 一诺 可馨 语桐 雨桐 子萱 若曦 静怡".split(),
    (2, "M"): "浩 宇 杰 子轩 浩然 宇轩 俊杰 博文 梓豪 一鸣 皓轩 铭泽 子墨 宇航 天佑 嘉豪 思远 睿".split(),
}

_CONDITIONS = (  # (condition, youngest age it is recorded at, share of residents that old)
    ("高血压", 40, 0.40),
    ("糖尿病", 40, 0.15),
    ("冠心病", 55, 0.12),
    ("慢阻肺", 55, 0.08),
    ("脑卒中后遗症", 60, 0.05),
    ("哮喘", 0, 0.03),
)

# Signed residents skew old (the elderly and the chronically ill sign first).
_AGE_BANDS = ((0, 13), (14, 39), (40, 59), (60, 95))
_AGE_BAND_CUM_WEIGHTS = tuple(accumulate((12, 20, 28, 40)))


def _given_name(rng: random.Random, birth: date, sex: str) -> str:
    generation = 0 if birth.year < 1965 else 1 if birth.year < 1990 else 2
    return rng.choice(_GIVEN_NAMES[(generation, sex)])


def _surname(rng: random.Random) -> str:
    return rng.choices(_SURNAMES, cum_weights=_SURNAME_CUM_WEIGHTS)[0]


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def _birth_date(rng: random.Random, today: date, youngest: int, oldest: int) -> date:
    """A birthday of someone aged youngest…oldest whole years today (and at least 30 days old)."""
    earliest = _years_before(today, oldest + 1) + timedelta(days=1)
    latest = min(_years_before(today, youngest), today - timedelta(days=30))
    return date.fromordinal(rng.randint(earliest.toordinal(), latest.toordinal()))


def _age(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _conditions(rng: random.Random, age: int) -> list[str]:
    return [name for name, youngest, share in _CONDITIONS if age >= youngest and rng.random() < share]


@dataclass(frozen=True)
class _Person:
    name: str
    card: IdCard
    phones: tuple[str, ...]
    conditions: tuple[str, ...] = ()
    guardians: tuple[tuple[int, str], ...] = ()  # (index of the guardian in the household, relation)


def _person(rng: random.Random, ids: _IdNumbers, today: date, sex: str, ages: tuple[int, int],
            phones: Sequence[str], surname: str | None = None) -> _Person:
    birth = _birth_date(rng, today, *ages)
    name = (surname or _surname(rng)) + _given_name(rng, birth, sex)
    return _Person(name, ids.issue(birth, sex), tuple(phones),
                   tuple(_conditions(rng, _age(birth, today))))


def _demo_household(rng: random.Random, ids: _IdNumbers, book: _PhoneBook,
                    today: date) -> list[_Person]:
    """One household, adults first (a household cut short keeps its guardians)."""
    kind = rng.choices(("elderly couple", "elderly alone", "young family", "adult"), (30, 20, 30, 20))[0]
    landline = book.landline() if rng.random() < 0.5 else None

    def numbers(mobile_share: float) -> list[str]:
        # Everyone is reachable: someone without a mobile is on the household's landline.
        own = [book.mobile()] if rng.random() < mobile_share or landline is None else []
        return own + ([landline] if landline else [])

    if kind == "elderly couple":
        husband = _person(rng, ids, today, "M", (62, 90), numbers(0.75))
        his_age = _age(husband.card.birth_date, today)
        return [husband, _person(rng, ids, today, "F", (his_age - 6, his_age + 2), numbers(0.7))]
    if kind == "elderly alone":
        sex = "F" if rng.random() < 0.65 else "M"
        return [_person(rng, ids, today, sex, (65, 95), numbers(0.6))]
    if kind == "adult":
        sex = rng.choice("MF")
        extra = [book.mobile()] if rng.random() < 0.15 else []
        return [_person(rng, ids, today, sex, (18, 59), [*numbers(1.0), *extra])]
    father = _person(rng, ids, today, "M", (28, 45), numbers(1.0))
    mother = _person(rng, ids, today, "F", (26, 43), numbers(1.0))
    oldest_child = min(13, _age(mother.card.birth_date, today) - 22)
    children = [
        # A child is reached at the mother's numbers, and takes the father's (one-character) surname.
        _person(rng, ids, today, rng.choice("MF"), (0, oldest_child), mother.phones, father.name[0])
        for _ in range(rng.choice((1, 1, 2)))
    ]
    return [father, mother,
            *(replace(c, guardians=((1, "母亲"), (0, "父亲"))) for c in children)]


def _contract(rng: random.Random, today: date, born: date) -> tuple[date, date] | None:
    """A yearly contract: in force for most, expired for some, none for a few."""
    draw = rng.random()
    if draw < 0.85:
        starts = today - timedelta(days=rng.randrange(365))
    elif draw < 0.95:
        starts = today - timedelta(days=365 + rng.randrange(1, 120))
    else:
        return None
    # A baby's first contract is signed after the birth, from the first of a following month:
    # a contract starting on the birth date would publish the birth date (contracts are not
    # secret), and with it most of the ID number (docs/privacy.md).
    starts = min(max(starts, _first_of_next_month(born)), today)
    return starts, starts + timedelta(days=364)


def _first_of_next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


# --- the district's structure and staff ----------------------------------------------------------

@dataclass(frozen=True)
class _CenterPlan:
    name: str
    teams: int
    night_doctors: int = 2
    residents: int = 0  # demo only: synthetic residents are spread at random


@dataclass(frozen=True)
class _DistrictPlan:
    kind: str  # "demo district", for messages
    name: str
    staff_prefix: str
    centers: tuple[_CenterPlan, ...]
    sip_host: str = "127.0.0.1"  # the demo PBX listens on loopback
    night_doctors: int = 2
    agents: int = 2


@dataclass(frozen=True)
class _Team:
    id: int
    name: str
    doctor_id: int


@dataclass
class _Center:
    id: int
    name: str
    teams: list[_Team] = field(default_factory=list)
    night_doctor_ids: list[int] = field(default_factory=list)


@dataclass
class _District:
    id: int
    centers: list[_Center]
    night_doctor_ids: list[int]
    staff: int


_NUMERALS = "零一二三四五六七八九"


def _chinese_number(n: int) -> str:
    """1–99 as written in team names: 一, 十, 十二, 二十, 二十三."""
    tens, ones = divmod(n, 10)
    return (("" if tens <= 1 else _NUMERALS[tens]) + ("十" if tens else "")
            + (_NUMERALS[ones] if ones or not tens else ""))


_EXTENSION_BASE = {"family_doctor": 1000, "assistant": 2000, "night_doctor": 3000, "agent": 4000}


async def _create_district(conn: asyncpg.Connection, vault: PiiVault, plan: _DistrictPlan,
                           rng: random.Random, today: date, book: _PhoneBook) -> _District:
    """The district, its centers and teams, and all staff in extension order."""
    district_id = await conn.fetchval(
        "INSERT INTO districts (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id",
        plan.name)
    if district_id is None:
        raise AlreadySeeded(f"the {plan.kind} {plan.name} is already loaded; nothing was changed")
    centers: list[_Center] = []
    team_ids: list[tuple[int, int, str]] = []  # (center index, team id, team name)
    for c, center in enumerate(plan.centers):
        center_id = await conn.fetchval(
            "INSERT INTO centers (district_id, name) VALUES ($1, $2) RETURNING id",
            district_id, center.name)
        centers.append(_Center(center_id, center.name))
        for t in range(1, center.teams + 1):
            name = f"{center.name}{_chinese_number(t)}团队"
            team_id = await conn.fetchval(
                "INSERT INTO teams (center_id, name) VALUES ($1, $2) RETURNING id", center_id, name)
            team_ids.append((c, team_id, name))

    staff: list[NewStaff] = []
    extensions = dict.fromkeys(_EXTENSION_BASE, 0)

    def hire(role: str, center_id: int | None = None, team_id: int | None = None) -> int:
        """Append one staff member; return their position in `staff`."""
        sip_uri = None
        if role in _EXTENSION_BASE:
            extensions[role] += 1
            if extensions[role] > 999:
                raise SeedError(f"more than 999 {role} staff do not fit the extension plan")
            sip_uri = f"sip:{_EXTENSION_BASE[role] + extensions[role]}@{plan.sip_host}"
        birth = _birth_date(rng, today, 26, 58)
        sex = rng.choice("MF")
        staff.append(NewStaff(
            f"{plan.staff_prefix}{len(staff) + 1:04d}", _surname(rng) + _given_name(rng, birth, sex),
            role, district_id, center_id, team_id, sip_uri, book.mobile()))
        return len(staff) - 1

    doctors = [hire("family_doctor", centers[c].id, team_id) for c, team_id, _ in team_ids]
    for c, team_id, _ in team_ids:
        hire("assistant", centers[c].id, team_id)
    center_nights = [[hire("night_doctor", center.id) for _ in range(p.night_doctors)]
                     for center, p in zip(centers, plan.centers, strict=True)]
    district_nights = [hire("night_doctor") for _ in range(plan.night_doctors)]
    for center in centers:
        hire("agent", center.id)
    for _ in range(plan.agents):
        hire("agent")
    for role in ("supervisor", "director"):
        for center in centers:
            hire(role, center.id)
    hire("district_admin")

    ids = await write_staff(conn, vault, staff)
    for (c, team_id, name), doctor in zip(team_ids, doctors, strict=True):
        centers[c].teams.append(_Team(team_id, name, ids[doctor]))
    for center, nights in zip(centers, center_nights, strict=True):
        center.night_doctor_ids = [ids[n] for n in nights]
    return _District(district_id, centers, [ids[n] for n in district_nights], len(staff))


def _roster(district: _District, today: date, tz: ZoneInfo, days: int = ROSTER_DAYS,
            holidays: Collection[date] = frozenset()) -> list[NewShift]:
    """Night shifts (centers + district backup) and weekend day shifts, and day shifts on
    `holidays` too; see the module docstring."""
    shifts: list[NewShift] = []
    weekend_days = 0
    for n in range(-1, days):
        day = today + timedelta(days=n)
        night = (datetime.combine(day, DAY_ENDS, tz),
                 datetime.combine(day + timedelta(days=1), DAY_STARTS, tz))
        for center in district.centers:
            doctor = center.night_doctor_ids[n % len(center.night_doctor_ids)]
            shifts.append(NewShift(doctor, district.id, center.id, *night))
        backup = district.night_doctor_ids[n % len(district.night_doctor_ids)]
        shifts.append(NewShift(backup, district.id, None, *night, kind="backup"))
        if n >= 0 and (day.weekday() >= 5 or day in holidays):
            daytime = (datetime.combine(day, DAY_STARTS, tz), datetime.combine(day, DAY_ENDS, tz))
            for center in district.centers:
                doctor = center.teams[weekend_days % len(center.teams)].doctor_id
                shifts.append(NewShift(doctor, district.id, center.id, *daytime))
            weekend_days += 1
    return shifts


def _resident(person: _Person, center: _Center, team: _Team,
              contract: tuple[date, date] | None) -> NewResident:
    # A resident without a contract has no doctor of their own: the contract is what names one.
    signed = contract is not None
    return NewResident(person.name, person.card, center.id, person.phones,
                       team.doctor_id if signed else None, team.id if signed else None,
                       contract, person.conditions)


# --- the demo district ---------------------------------------------------------------------------

_DEMO = _DistrictPlan("demo district", DEMO_DISTRICT, "BH", (
    _CenterPlan("北塘街", teams=3, residents=120),
    _CenterPlan("寨上朝阳", teams=3, residents=100),
    _CenterPlan("古林街", teams=2, residents=80),
))
_DEMO_REGION = "120116"  # 天津市滨海新区


_KNOWN_MOTHER = _Person("陈静", id_card(_DEMO_REGION, date(1989, 5, 20), "904"),
                        ("13800000003", "02225320003"))


@dataclass(frozen=True)
class _KnownHousehold:
    center: str                     # they belong to the first team of this center
    people: tuple[_Person, ...]
    contract_days: tuple[int, int]  # first and last day of everyone's contract, from today


# The well-known residents of the module docstring; ID sequence codes 9xx (see _IdNumbers).
_KNOWN_HOUSEHOLDS = (
    _KnownHousehold("北塘街", (_Person("张桂兰", id_card(_DEMO_REGION, date(1948, 3, 12), "902"),
                                       ("13800000001", "02225320001"), ("高血压", "糖尿病")),),
                    (-300, 65)),
    _KnownHousehold("寨上朝阳", (_Person("刘建国", id_card(_DEMO_REGION, date(1955, 1, 1), "911"),
                                         ("13800000002",), ("冠心病",)),),
                    (-400, -35)),
    _KnownHousehold("古林街", (_KNOWN_MOTHER,
                               _Person("刘子涵", id_card(_DEMO_REGION, date(2019, 6, 1), "913"),
                                       _KNOWN_MOTHER.phones, guardians=((0, "母亲"),))),
                    (-120, 245)),
)


async def seed_demo(pool: asyncpg.Pool, vault: PiiVault, *, today: date, tz: ZoneInfo) -> dict[str, int]:
    """Load the demo district 滨海新区; AlreadySeeded when it is there already."""
    rng = random.Random(DEMO_RANDOM_SEED)
    book = _PhoneBook(rng, reserved=[n for h in _KNOWN_HOUSEHOLDS for p in h.people for n in p.phones])
    ids = _IdNumbers(_DEMO_REGION)
    residents: list[NewResident] = []
    links: list[tuple[int, int, str]] = []  # (child, guardian, relation) as indexes in `residents`

    def add_household(people: Sequence[_Person], center: _Center, team: _Team,
                      contracts: Sequence[tuple[date, date] | None]) -> None:
        first = len(residents)
        for person, contract in zip(people, contracts, strict=True):
            links.extend((len(residents), first + g, relation) for g, relation in person.guardians)
            residents.append(_resident(person, center, team, contract))

    async with pool.acquire() as conn, conn.transaction():
        district = await _create_district(conn, vault, _DEMO, rng, today, book)
        by_name = {c.name: c for c in district.centers}
        for known in _KNOWN_HOUSEHOLDS:
            center = by_name[known.center]
            first, last = (today + timedelta(days=d) for d in known.contract_days)
            add_household(known.people, center, center.teams[0], [(first, last)] * len(known.people))
        for plan, center in zip(_DEMO.centers, district.centers, strict=True):
            remaining = plan.residents - sum(len(h.people) for h in _KNOWN_HOUSEHOLDS
                                             if h.center == plan.name)
            while remaining > 0:
                # a household cut short keeps its adults, so every child keeps its guardians
                people = _demo_household(rng, ids, book, today)[:remaining]
                add_household(people, center, rng.choice(center.teams),
                              [_contract(rng, today, p.card.birth_date) for p in people])
                remaining -= len(people)

        written = await write_residents(conn, vault, residents)
        await link_guardians(conn, [(written.ids[c], written.ids[g], r) for c, g, r in links])
        shifts = _roster(district, today, tz)
        await write_shifts(conn, shifts)
        # The district's hotline number, and one exclusive extension per center (8001…).
        await conn.executemany(
            "INSERT INTO hotline_lines (number, district_id, center_id, label) VALUES ($1, $2, $3, $4)",
            [("hotline", district.id, None, f"{_DEMO.name}家庭医生签约服务热线"),
             *((f"{8001 + i}", district.id, c.id, f"{plan.name}专线")
               for i, (plan, c) in enumerate(zip(_DEMO.centers, district.centers, strict=True)))])
    return {"centers": len(district.centers),
            "teams": sum(len(c.teams) for c in district.centers),
            "staff": district.staff, "residents": len(residents), "guardians": len(links),
            "shifts": len(shifts)}


# --- the synthetic district ----------------------------------------------------------------------

def _synthetic_plan(residents: int, seed: int) -> _DistrictPlan:
    doctors = math.ceil(residents / RESIDENTS_PER_DOCTOR)
    centers = math.ceil(doctors / TEAMS_PER_CENTER)
    teams, one_more = divmod(doctors, centers)  # spread evenly: the first centers get one more
    return _DistrictPlan(
        "synthetic district", synthetic_district_name(seed), f"S{seed}-",
        tuple(_CenterPlan(f"合成{c + 1:02d}街", teams + (c < one_more)) for c in range(centers)),
        # no softphone answers for synthetic staff; a host of their own keeps their URIs apart
        # from the demo's when both districts share a database
        sip_host=f"synthetic{seed}.invalid")


def _synthetic_residents(rng: random.Random, seed: int, ids: _IdNumbers, teams: Sequence[tuple[_Center, _Team]],
                         today: date, indexes: range) -> list[NewResident]:
    batch = []
    for i in indexes:
        center, team = rng.choice(teams)
        phones = [synthetic_phone(seed, i)]
        if rng.random() < 0.35:
            phones.append(synthetic_landline(seed, i))
        if rng.random() < 0.15:
            phones.append(synthetic_phone(seed, i, line=1))
        sex = "F" if rng.random() < 0.52 else "M"
        ages = rng.choices(_AGE_BANDS, cum_weights=_AGE_BAND_CUM_WEIGHTS)[0]
        person = _person(rng, ids, today, sex, ages, phones)
        batch.append(_resident(person, center, team, _contract(rng, today, person.card.birth_date)))
    return batch


async def seed_synthetic(pool: asyncpg.Pool, vault: PiiVault, *, residents: int, seed: int,
                         today: date, tz: ZoneInfo, roster_days: int = ROSTER_DAYS,
                         holidays: Collection[date] = frozenset()) -> dict[str, int]:
    """Load the synthetic district 合成区<seed> with `residents` residents (see the docstring).

    The roster covers the night before `today` and `roster_days` days from `today`; the daytime
    of `holidays` (public holidays on weekdays) gets day shifts like a weekend day.
    """
    if residents < 1:
        raise SeedError("a synthetic district needs at least 1 resident")
    plan = _synthetic_plan(residents, seed)
    rng = random.Random(seed)
    ids = _IdNumbers(f"9{seed % 100_000:05d}")
    started = clock.perf_counter()
    # One transaction for the whole district, like the demo: a load that fails half-way must not
    # leave a district that looks loaded (it would be refused as AlreadySeeded next time and skew
    # every benchmark). PostgreSQL copes with a transaction of a few million rows; the batches
    # only bound the rows held in Python at once.
    async with pool.acquire() as conn, conn.transaction():
        district = await _create_district(conn, vault, plan, rng, today, _PhoneBook(rng))
        teams = [(center, team) for center in district.centers for team in center.teams]
        for first in range(0, residents, SYNTHETIC_BATCH):
            indexes = range(first, min(first + SYNTHETIC_BATCH, residents))
            await write_residents(conn, vault, _synthetic_residents(rng, seed, ids, teams, today, indexes))
            log.info("seed.synthetic.progress", residents=indexes.stop, of=residents,
                     seconds=round(clock.perf_counter() - started, 1))
        shifts = _roster(district, today, tz, roster_days, frozenset(holidays))
        await write_shifts(conn, shifts)
        # Fresh statistics, so the first lookups after a bulk load are planned on the real sizes.
        await conn.execute("ANALYZE residents, resident_phones, contracts, resident_conditions, "
                           "staff, duty_shifts")
    return {"centers": len(district.centers), "teams": len(teams), "staff": district.staff,
            "residents": residents, "shifts": len(shifts)}


async def extend_synthetic_roster(pool: asyncpg.Pool, *, seed: int, tz: ZoneInfo, roster_days: int,
                                  holidays: Collection[date] = frozenset()) -> tuple[date, int]:
    """Bring the roster of the synthetic district 合成区<seed> up to `roster_days` days from the
    day it was seeded, e.g. a district seeded with the default 30 days, when a year is needed.

    Adds exactly the shifts seed_synthetic(roster_days=…, holidays=…) would have written and the
    roster lacks (by center, kind and start), in one transaction; shifts already there, swapped
    or not, are left alone. Returns (the day it was seeded, the number of shifts added).
    """
    async with pool.acquire() as conn, conn.transaction():
        district_id = await conn.fetchval(
            "SELECT id FROM districts WHERE name = $1", synthetic_district_name(seed))
        if district_id is None:
            raise SeedError(f"the synthetic district {synthetic_district_name(seed)} is not loaded")
        first = await conn.fetchval(
            "SELECT min(starts_at) FROM duty_shifts WHERE district_id = $1", district_id)
        if first is None or first.astimezone(tz).time() != DAY_ENDS:
            raise SeedError(f"{synthetic_district_name(seed)} has no roster as seed_synthetic writes it")
        today = first.astimezone(tz).date() + timedelta(days=1)  # its first night: the one before
        centers = {r["id"]: _Center(r["id"], r["name"]) for r in await conn.fetch(
            "SELECT id, name FROM centers WHERE district_id = $1 ORDER BY id", district_id)}
        # staff in hiring order (ids are handed out in that order): family doctors by team, then
        # the centers' night doctors, then the district's
        for r in await conn.fetch(
                "SELECT DISTINCT ON (t.id) t.id, t.name, t.center_id, s.id AS doctor_id"
                " FROM teams t JOIN staff s ON s.team_id = t.id AND s.role = 'family_doctor'"
                " WHERE t.center_id = ANY($1::int[]) ORDER BY t.id, s.id", list(centers)):
            centers[r["center_id"]].teams.append(_Team(r["id"], r["name"], r["doctor_id"]))
        district_nights = []
        for r in await conn.fetch(
                "SELECT id, center_id FROM staff WHERE district_id = $1 AND role = 'night_doctor'"
                " ORDER BY id", district_id):
            if r["center_id"] is None:
                district_nights.append(r["id"])
            else:
                centers[r["center_id"]].night_doctor_ids.append(r["id"])
        district = _District(district_id, list(centers.values()), district_nights, 0)
        have = {(r["center_id"], r["kind"], r["starts_at"]) for r in await conn.fetch(
            "SELECT center_id, kind, starts_at FROM duty_shifts WHERE district_id = $1", district_id)}
        missing = [s for s in _roster(district, today, tz, roster_days, frozenset(holidays))
                   if (s.center_id, s.kind, s.starts_at) not in have]
        if missing:
            await write_shifts(conn, missing)
            await conn.execute("ANALYZE duty_shifts")
    return today, len(missing)


# --- what to try in the demo ---------------------------------------------------------------------

DEMO_CENTER = "北塘街"  # 张桂兰's center: the banner's examples call as her


@dataclass(frozen=True)
class DemoClock:
    """Instants to start the demo's clock at (HOTLINE_CLOCK_START) to try each service."""

    day: datetime | None  # a working day 10:00, within the seeded roster's span
    night: datetime | None  # inside a night duty shift of DEMO_CENTER, hours before it ends
    roster_ends: datetime | None


async def demo_clock(conn: asyncpg.Connection, calendar: WorkingCalendar, now: datetime) -> DemoClock:
    """Where the seeded roster lets a demo try day and night service, from `now` on.

    Computed from the roster in the database (not from the seed's today), so a banner printed
    days after seeding still suggests instants a duty doctor is rostered for; None when the
    roster has run out (`make clean && make demo` seeds a fresh one).
    """
    center_id = await conn.fetchval(
        "SELECT c.id FROM centers c JOIN districts d ON d.id = c.district_id"
        " WHERE d.name = $1 AND c.name = $2", DEMO_DISTRICT, DEMO_CENTER)
    if center_id is None:
        return DemoClock(None, None, None)
    shifts = await conn.fetch(
        "SELECT starts_at, ends_at FROM duty_shifts WHERE center_id = $1 AND kind = 'duty'"
        " AND ends_at > $2 ORDER BY starts_at", center_id, now)
    roster_ends = max((s["ends_at"] for s in shifts), default=None)
    night = None
    for s in shifts:
        # two hours into the shift (or from now), with at least two hours of it left to call in
        at = max(s["starts_at"] + timedelta(hours=2), now).replace(second=0, microsecond=0)
        if at + timedelta(hours=2) <= s["ends_at"] and not calendar.day_service(at, center_id).day:
            night = at
            break
    day = None
    if roster_ends is not None:
        tz = now.tzinfo
        for n in range(0, ROSTER_DAYS + 1):
            at = datetime.combine(now.date() + timedelta(days=n), time(10), tz)
            if now <= at <= roster_ends and calendar.day_service(at, center_id).day:
                day = at
                break
    return DemoClock(day, night, roster_ends)
