"""Phone numbers as trunks, people and sheets write them (routing/numbers.py), and the same
normalization at every edge: the CLI, the directory, the call flow's calling number."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.callbacks import Callbacks
from hotline.clock import Clock
from hotline.config import ConfigError, load_config
from ivr.flow import CallFlow, FlowSettings
from recordings.call_records import CallerNumber, CallRecords
from routing.directory import Directory
from routing.numbers import InvalidNumber, check_area_code, normalize_phone
from store.pii import PiiVault
from tests.conftest import run_cli
from tests.district import District, build_district

ZHANG_MOBILE = "13800000001"
ZHANG_LANDLINE = "02225320001"

# (as written, canonical form) with the default area code 022
VALID = [
    # mobiles
    ("13800000001", ZHANG_MOBILE),
    ("+8613800000001", ZHANG_MOBILE),
    ("008613800000001", ZHANG_MOBILE),
    ("8613800000001", ZHANG_MOBILE),  # refused before: trunks send it without + or 00
    ("013800000001", ZHANG_MOBILE),   # the long-distance 0 before a mobile
    ("+86 138 0000 0001", ZHANG_MOBILE),
    ("138-0000-0001", ZHANG_MOBILE),
    ("(+86) 138 0000 0001", ZHANG_MOBILE),
    ("0086-138-0000-0001", ZHANG_MOBILE),
    ("１３８０００００００１", ZHANG_MOBILE),     # full-width digits from an IME
    ("＋８６ １３８ ００００ ０００１", ZHANG_MOBILE),
    (" 13800000001\t", ZHANG_MOBILE),
    # SIP and tel URIs, as the edge may see the calling number
    ("sip:+8613800000001@pbx.example;user=phone", ZHANG_MOBILE),
    ("sip:8613800000001@127.0.0.1:5060", ZHANG_MOBILE),
    ("sips:013800000001@pbx.example", ZHANG_MOBILE),
    ("tel:+86-138-0000-0001", ZHANG_MOBILE),
    ("tel:+8613800000001;phone-context=+86", ZHANG_MOBILE),
    ('"张桂兰" <sip:+8613800000001@pbx.example>;tag=1928301774', ZHANG_MOBILE),
    ("<sip:13800000001@127.0.0.1>", ZHANG_MOBILE),
    ("SIP:%2B8613800000001@pbx.example", ZHANG_MOBILE),
    # Tianjin landlines, with and without the area code and the country code
    ("02225320001", ZHANG_LANDLINE),
    ("022-2532-0001", ZHANG_LANDLINE),
    ("(022) 2532 0001", ZHANG_LANDLINE),
    ("（022）25320001", ZHANG_LANDLINE),  # full-width parentheses
    ("25320001", ZHANG_LANDLINE),
    ("2532-0001", ZHANG_LANDLINE),
    ("+8622 2532 0001", ZHANG_LANDLINE),
    ("+86 22 25320001", ZHANG_LANDLINE),
    ("+86 (0)22 2532 0001", ZHANG_LANDLINE),
    ("008622 2532 0001", ZHANG_LANDLINE),
    ("862225320001", ZHANG_LANDLINE),
    ("tel:+86-22-2532-0001", ZHANG_LANDLINE),
    ("sip:02225320001@pbx.example", ZHANG_LANDLINE),
    ("sip:25320001@pbx.example", ZHANG_LANDLINE),
    ("sip:862225320001@pbx.example", ZHANG_LANDLINE),
    # other cities keep their own area code
    ("01087654321", "01087654321"),
    ("+86 10 8765 4321", "01087654321"),
    ("0571-8765-4321", "057187654321"),
    ("0571-876-5432", "05718765432"),  # 7-digit subscriber numbers exist with 4-digit codes
    ("+86 571 8765 4321", "057187654321"),
    ("8657187654321", "057187654321"),
    # a local number of 8 digits starting 86 is a local number, not a country code
    ("86123456", "02286123456"),
]

# (as written, a fragment of the error)
INVALID = [
    ("", "empty phone number"),
    ("   ", "empty phone number"),
    ("-", "empty phone number"),
    ("1381234", "mobile number '*****34' must have 11 digits"),
    ("138000000012", "must have 11 digits"),
    ("12800000001", "must have 11 digits starting 13–19"),
    ("1001", "mobile number '1001' must have 11 digits"),  # an extension, shown as typed
    ("abc", "phone number 'abc' has characters other than digits"),  # not a number: not masked
    ("1381234567o", "phone number '138****567o' has characters other than digits"),
    ("anonymous", "has characters other than digits"),
    ("1.39E+10", "has characters other than digits"),
    ("sip:alice@pbx.example", "has characters other than digits"),
    ("sip:pbx.example", "empty phone number"),
    ("tel:", "empty phone number"),
    ("+14155550123", "is not a mainland China number (+86)"),
    ("001 415 555 0123", "is not a mainland China number (+86)"),
    ("sip:+14155550123@pbx.example", "is not a mainland China number (+86)"),
    ("+852 2123 4567", "is not a mainland China number (+86)"),  # Hong Kong: its own plan
    ("+86", "is neither a mobile"),
    ("+86123", "is neither a mobile"),
    ("+86 138 0000 000", "is neither a mobile"),
    ("8612345678901234", "is neither a mobile"),
    ("2532001", "has the wrong length for area code 022"),  # 022 numbers have 8 digits
    ("02212345", "has the wrong length for its area code"),
    ("0221234567", "has the wrong length for its area code"),
    ("02212345678", "has the wrong length for its area code"),  # subscriber starts with 1
    ("05712345", "has the wrong length for its area code"),
    ("110", "must have 11 digits"),  # a service number, not a caller
    ("+", "has characters other than digits"),
    ("\x00\x01", "has characters other than digits"),
    ("٠١٢٣٤٥٦٧٨٩٠", "has characters other than digits"),  # digits, but not ASCII ones
    ("1" * 129, "not a phone number"),
]


@pytest.mark.parametrize(("text", "canonical"), VALID, ids=[t for t, _ in VALID])
def test_every_form_of_a_number_has_one_canonical_form(text: str, canonical: str) -> None:
    assert normalize_phone(text) == canonical
    # the canonical form is a fixed point, whatever the district's area code
    assert normalize_phone(canonical) == canonical
    assert normalize_phone(canonical, "0571") == canonical


@pytest.mark.parametrize(("text", "fragment"), INVALID, ids=[repr(t)[:40] for t, _ in INVALID])
def test_what_is_not_a_mainland_number_is_refused_with_why(text: str, fragment: str) -> None:
    with pytest.raises(InvalidNumber) as refused:
        normalize_phone(text)
    assert fragment in str(refused.value)


def test_refusals_never_quote_a_whole_number() -> None:
    for text in ("+14155550123", "138000000012", "02212345678", "+86 138 0000 000"):
        with pytest.raises(InvalidNumber) as refused:
            normalize_phone(text)
        digits = "".join(c for c in text if c.isdigit())
        assert digits not in str(refused.value).replace(" ", "")


def test_the_area_code_completes_local_landlines_only() -> None:
    assert normalize_phone("25320001", "022") == "02225320001"
    assert normalize_phone("87654321", "0571") == "057187654321"
    assert normalize_phone("8765432", "0571") == "05718765432"
    assert normalize_phone("87654321", "010") == "01087654321"
    # a number with its own area code, or a mobile, is not touched by the district's
    assert normalize_phone("022-2532-0001", "0571") == ZHANG_LANDLINE
    assert normalize_phone("8613800000001", "0571") == ZHANG_MOBILE
    with pytest.raises(InvalidNumber, match="wrong length for area code 010"):
        normalize_phone("8765432", "010")


@pytest.mark.parametrize("code", ["022", "010", "0571", " 0898 "])
def test_valid_area_codes(code: str) -> None:
    assert check_area_code(code) == code.strip()


@pytest.mark.parametrize("code", ["22", "0", "00", "011", "02", "05711", "abc", "+8622", ""])
def test_invalid_area_codes(code: str) -> None:
    with pytest.raises(InvalidNumber, match="not a mainland area code"):
        check_area_code(code)


def test_area_code_setting() -> None:
    assert load_config({}).area_code == "022"
    assert load_config({"HOTLINE_AREA_CODE": "0571"}).area_code == "0571"
    with pytest.raises(ConfigError, match="area_code: area code '22' is not a mainland area code"):
        load_config({"HOTLINE_AREA_CODE": "22"})


def test_no_text_makes_the_normalizer_raise_anything_else() -> None:
    # what a hostile or broken peer can put in a From header's user part
    odd = ["<", ">", "<>", "<sip:", "sip:@", "sip:;", "tel:;x", "%", "%zz", "%2", "sip:%00@x",
           "\ud800", "+-()", "0" * 128, "+" * 128, "<" * 64 + ">" * 64, "tel:+86%31%33%38", "\u202e138"]
    for text in odd:
        try:
            normalize_phone(text)
        except InvalidNumber:
            pass


# --- the same normalization at every edge, against the real database ------------------------------


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    return await build_district(pool, vault, week_of=date(2026, 11, 22))


async def test_the_directory_finds_the_resident_from_every_form(
    district: District, pool: asyncpg.Pool, vault: PiiVault
) -> None:
    directory = Directory(pool, vault)
    for text, _ in VALID:
        caller = await directory.find_caller(text)
        if normalize_phone(text) in (ZHANG_MOBILE, ZHANG_LANDLINE):
            assert caller is not None and caller.resident_id == district.resident_id, text
    for text, _ in INVALID:
        assert await directory.find_caller(text) is None, text  # an unknown caller, never a crash


async def test_another_districts_area_code(district: District, pool: asyncpg.Pool, vault: PiiVault) -> None:
    # the local number means 022 2532 0001 only where 022 is the area code
    assert (await Directory(pool, vault, area_code="022").find_caller("25320001")).resident_id \
        == district.resident_id
    assert await Directory(pool, vault, area_code="0571").find_caller("25320001") is None


class _CallerHangsUpBeforeAnswer:
    """The inbound leg as the call flow sees it (telephony.agent.InboundLeg), for a caller who
    gives up while the greeting is about to start: the flow identifies them, records the call
    and stops. The SIP side of this is tested in test_sip_edge; here, the calling number."""

    def __init__(self, calling_number: str):
        self.call_id = f"edge-{calling_number!r}@test"
        self.calling_number = calling_number
        self.dialled_number = "hotline"
        self.ended = asyncio.Event()

    async def answer(self) -> None:
        self.ended.set()
        raise RuntimeError("the caller cancelled")

    async def hangup(self) -> None:
        pass

    async def refuse(self, *_: Any) -> None:
        pass


@pytest.mark.parametrize(("calling_number", "identified"), [
    ("8613800000001", True),
    ("+8613800000001", True),
    ("008613800000001", True),
    ("013800000001", True),
    ("25320001", True),
    ("+862225320001", True),
    ("sip:+8613800000001@pbx.example;user=phone", True),
    ("+14155550123", False),
    ("anonymous", False),
    ("", False),
    ("1" * 300, False),
])
async def test_the_call_flow_identifies_the_caller_from_the_trunks_form(
    district: District, pool: asyncpg.Pool, vault: PiiVault, tmp_path: Any,
    calling_number: str, identified: bool,
) -> None:
    records = CallRecords(pool, vault, node="edge")
    flow = CallFlow(records=records, callbacks=Callbacks(pool), directory=Directory(pool, vault),
                    routing=None, vault=vault,  # type: ignore[arg-type]
                    clock=Clock(datetime(2026, 11, 23, 10, tzinfo=ZoneInfo("Asia/Shanghai"))),
                    dial=None, settings=FlowSettings(recordings_dir=tmp_path))  # type: ignore[arg-type]
    leg = _CallerHangsUpBeforeAnswer(calling_number)
    assert await flow.handle(leg) == "ivr_only"
    row = await pool.fetchrow("SELECT resident_id, caller_number_hash AS number_hash, line, district_id,"
                              " center_id, caller_number_masked AS number_masked FROM call_records"
                              " WHERE call_id = $1", leg.call_id)
    if identified:
        assert row["resident_id"] == district.resident_id
        # placed before the answer, without routing data: the caller's own center and district
        assert (row["line"], row["district_id"], row["center_id"]) == (
            "hotline", district.district_id, district.center_id)
        # stored under the canonical number, so a callback task finds the same caller
        canonical = normalize_phone(calling_number)
        assert row["number_hash"] == CallerNumber.of(vault, canonical).hash
        assert canonical not in row["number_masked"]
    else:
        assert row["resident_id"] is None and row["number_hash"] is None
        assert len(row["number_masked"]) <= 32


# --- the CLI ----------------------------------------------------------------------------------


async def test_cli_route_and_show_take_every_form(district: District, cli_env: dict[str, str]) -> None:
    for caller in ("8613800000001", "+86 22 2532 0001", "sip:013800000001@pbx"):
        result = run_cli(cli_env, "route", "--caller", caller, "--at", "2026-11-23T10:00+08:00", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["resident"] == {"id": district.resident_id, "name": "张桂兰"}
    shown = run_cli(cli_env, "residents", "show", "008613800000001", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == district.resident_id

    # the district's area code completes local landlines: 25320001 is 张桂兰's in 022 only
    local = run_cli(cli_env, "residents", "show", "25320001", "--json")
    assert local.returncode == 0 and json.loads(local.stdout)["id"] == district.resident_id
    elsewhere = run_cli({**cli_env, "HOTLINE_AREA_CODE": "0571"}, "residents", "show", "25320001")
    assert elsewhere.returncode == 1, elsewhere.stderr

    foreign = run_cli(cli_env, "route", "--caller", "+14155550123")
    assert foreign.returncode == 2
    assert "--caller: phone number '+14*****0123' is not a mainland China number (+86)" in foreign.stderr
    assert "Traceback" not in foreign.stderr

    bad_code = run_cli({**cli_env, "HOTLINE_AREA_CODE": "22"}, "residents", "show", "25320001")
    assert bad_code.returncode == 2 and "area_code" in bad_code.stderr
