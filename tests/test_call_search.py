"""The console's call list, detail and recordings (recordings/call_search.py), on a real
PostgreSQL: every filter, keyset paging, bad input, and the scope of every role."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.callbacks import Callbacks
from recordings.call_log import CallLog
from recordings.call_records import CallerNumber, CallPlace, CallRecords
from recordings.call_search import (
    EXPORT_COLUMNS,
    CallFilter,
    CallSearch,
    decode_cursor,
    encode_cursor,
    export_values,
    verify_checksum,
)
from routing.scope import Params, Scope, Viewer
from store.pii import PiiVault
from tests.district import District, build_district

SH = ZoneInfo("Asia/Shanghai")
WEEK = date(2026, 11, 22)
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=SH)  # Monday 10:00
NIGHT = datetime(2026, 11, 23, 21, 0, tzinfo=SH)  # within 赵医生's night shift


@dataclass
class World:
    d: District
    center2: int
    team2: int
    doctor2: int
    district2: int
    center3: int


@pytest.fixture
async def world(pool: asyncpg.Pool, vault: PiiVault) -> World:
    d = await build_district(pool, vault, week_of=WEEK)
    center2 = await pool.fetchval(
        "INSERT INTO centers (district_id, name) VALUES ($1, '另一街') RETURNING id", d.district_id)
    team2 = await pool.fetchval("INSERT INTO teams (center_id, name) VALUES ($1, '另一团队') RETURNING id", center2)
    doctor2 = await pool.fetchval(
        "INSERT INTO staff (staff_no, name, role, district_id, center_id, team_id, sip_uri)"
        " VALUES ('D009', '周医生', 'family_doctor', $1, $2, $3, 'sip:1009@127.0.0.1') RETURNING id",
        d.district_id, center2, team2)
    district2 = await pool.fetchval("INSERT INTO districts (name) VALUES ('别区') RETURNING id")
    center3 = await pool.fetchval(
        "INSERT INTO centers (district_id, name) VALUES ($1, '别区街') RETURNING id", district2)
    return World(d, center2, team2, doctor2, district2, center3)


async def add_call(pool: asyncpg.Pool, vault: PiiVault, *, at: datetime, district_id: int,
                   number: str = "13900000099", resident_id: int | None = None, line: str | None = "hotline",
                   center_id: int | None = None, team_id: int | None = None, disposition: str = "connected",
                   rung: tuple[tuple[int, str], ...] = (), recording: tuple[str, str] | None = None) -> int:
    """A call record as the flow leaves it; `rung`: (staff id, outcome) per dial attempt."""
    caller = CallerNumber.of(vault, number)
    answered_by = next((s for s, outcome in rung if outcome == "answered"), None)
    record_id = await pool.fetchval(
        """INSERT INTO call_records (call_id, caller_number_hash, caller_number_enc, caller_number_masked,
               resident_id, offered_at, answered_at, connected_at, ended_at, disposition, line, district_id,
               center_id, team_id, answered_by, route_service, route_reason, recording_path, recording_sha256,
               recording_seconds)
           VALUES (gen_random_uuid()::text, $1, $2, $3, $4, $5::timestamptz, $5::timestamptz + interval '1 second',
                   CASE WHEN $6::int IS NULL THEN NULL ELSE $5::timestamptz + interval '9 seconds' END,
                   CASE WHEN $7::text = 'in_progress' THEN NULL ELSE $5::timestamptz + interval '60 seconds' END,
                   $7, $8, $9, $10, $11, $6, 'day', 'within the day window',
                   $12, $13::text, CASE WHEN $13::text IS NULL THEN NULL ELSE 59 END)
           RETURNING id""",
        caller.hash, caller.encrypted, caller.masked, resident_id, at, answered_by, disposition, line,
        district_id, center_id, team_id, recording[0] if recording else None, recording[1] if recording else None)
    for seq, (staff_id, outcome) in enumerate(rung, 1):
        await pool.execute(
            "INSERT INTO dial_attempts (call_record_id, seq, staff_id, sip_uri, started_at, ended_at, outcome)"
            " VALUES ($1, $2, $3, 'sip:x@127.0.0.1', $4::timestamptz, $4::timestamptz + interval '5 seconds', $5)",
            record_id, seq, staff_id, at + timedelta(seconds=2 + 6 * seq), outcome)
    return record_id


def viewer(w: World, role: str) -> Scope:
    d = w.d
    staff = {"family_doctor": (d.doctor_id, "D001", d.center_id, d.team_id),
             "assistant": (d.assistant_id, "A001", d.center_id, d.team_id),
             "night_doctor": (d.night_id, "N001", d.center_id, None),
             "agent": (d.agent_id, "G001", None, None),
             # roles the small district has nobody for: their scope needs only the ids
             "director": (900001, "C001", d.center_id, None),
             "supervisor": (900002, "S001", None, None),
             "district_admin": (900003, "M001", None, None)}[role]
    staff_id, staff_no, center_id, team_id = staff
    return Scope(Viewer(staff_id, staff_no, role, role, d.district_id, center_id, team_id))


async def ids(search: CallSearch, scope: Scope, filt: CallFilter) -> list[int]:
    page = await search.page(scope, filt, limit=500)
    assert page.next_cursor is None
    return [r.id for r in page.rows]


# -- filters --------------------------------------------------------------------------------------


async def test_every_filter_narrows_the_list_to_the_matching_calls(
        pool: asyncpg.Pool, vault: PiiVault, world: World) -> None:
    d = world.d
    common = {"district_id": d.district_id}
    zhang_mobile = await add_call(pool, vault, at=T0, number="13800000001", resident_id=d.resident_id,
                                  center_id=d.center_id, team_id=d.team_id, rung=((d.doctor_id, "answered"),),
                                  **common)
    # she calls from her landline: a call that only her other number links to her
    zhang_landline = await add_call(pool, vault, at=T0 + timedelta(hours=1), number="02225320001",
                                    resident_id=None, center_id=d.center_id, disposition="missed",
                                    rung=((d.doctor_id, "no_answer"), (d.assistant_id, "busy")), **common)
    liu = await add_call(pool, vault, at=T0 + timedelta(hours=2), number="13800000002", resident_id=d.orphan_id,
                         center_id=d.center_id, team_id=d.team_id, disposition="abandoned", line="8001",
                         rung=((d.assistant_id, "cancelled"),), **common)
    other_center = await add_call(pool, vault, at=T0 + timedelta(days=1), center_id=world.center2,
                                  team_id=world.team2, disposition="ivr_only", **common)
    live = await add_call(pool, vault, at=T0 + timedelta(days=2), center_id=world.center2,
                          disposition="in_progress", line=None, **common)
    failed = await add_call(pool, vault, at=T0 - timedelta(days=1), disposition="failed",
                            rung=((d.agent_id, "answered"),), **common)
    everything = [live, other_center, liu, zhang_landline, zhang_mobile, failed]
    search = CallSearch(pool, vault)
    admin = viewer(world, "district_admin")

    assert await ids(search, admin, CallFilter()) == everything
    assert await search.count(admin, CallFilter()) == 6
    cases: list[tuple[CallFilter, list[int]]] = [
        (CallFilter(since=T0, until=T0 + timedelta(hours=2)), [zhang_landline, zhang_mobile]),
        (CallFilter(since=T0 + timedelta(hours=2)), [live, other_center, liu]),
        (CallFilter(until=T0), [failed]),
        (CallFilter(center_id=d.center_id), [liu, zhang_landline, zhang_mobile]),
        (CallFilter(center_id=world.center2), [live, other_center]),
        (CallFilter(team_id=d.team_id), [liu, zhang_mobile]),
        (CallFilter(team_id=world.team2), [other_center]),
        # rung or answered
        (CallFilter(staff_id=d.doctor_id), [zhang_landline, zhang_mobile]),
        (CallFilter(staff_id=d.assistant_id), [liu, zhang_landline]),
        (CallFilter(staff_id=d.agent_id), [failed]),
        (CallFilter(staff_id=d.assistant_id, since=T0 + timedelta(hours=2)), [liu]),
        (CallFilter(staff_id=world.doctor2), []),
        (CallFilter(disposition="connected"), [zhang_mobile]),
        (CallFilter(disposition="missed"), [zhang_landline]),
        (CallFilter(disposition="abandoned"), [liu]),
        (CallFilter(disposition="ivr_only"), [other_center]),
        (CallFilter(disposition="failed"), [failed]),
        (CallFilter(disposition="in_progress"), [live]),
        (CallFilter(line="8001"), [liu]),
        (CallFilter(line="hotline"), [other_center, zhang_landline, zhang_mobile, failed]),
        (CallFilter(resident_id=d.resident_id), [zhang_mobile]),
        # any form of her numbers: the calling number itself, or any number of the resident
        (CallFilter(caller_number="+86 138-0000-0001"), [zhang_mobile]),
        (CallFilter(caller_number="25320001"), [zhang_landline, zhang_mobile]),
        (CallFilter(caller_number="13800000002"), [liu]),
        (CallFilter(caller_number="13900000099"), [live, other_center, failed]),
        (CallFilter(caller_number="13700000000"), []),
        (CallFilter(resident_name="张桂兰"), [zhang_mobile]),
        (CallFilter(resident_name="张"), [zhang_mobile]),
        (CallFilter(resident_name="刘建"), [liu]),
        (CallFilter(resident_name="桂兰"), []),  # a prefix, not a substring
        (CallFilter(resident_name="张桂兰兰"), []),
        (CallFilter(center_id=d.center_id, disposition="missed", staff_id=d.doctor_id), [zhang_landline]),
    ]
    for filt, expected in cases:
        assert await ids(search, admin, filt) == expected, filt
        assert await search.count(admin, filt) == len(expected), filt
    assert await search.count(admin, CallFilter(), cap=3) == 4  # "more than 3"

    row = (await search.page(admin, CallFilter(resident_id=d.resident_id))).rows[0]
    assert (row.caller_number_masked, row.resident_name, row.center_name, row.team_name, row.answered_by_name) \
        == ("138****0001", "张桂兰", "测试街", "测试一团队", "王医生")
    assert (row.duration_s, row.time_to_answer_s, row.has_recording, row.line) == (60.0, 9.0, False, "hotline")
    exported = [r async for r in search.export_rows(admin, CallFilter(center_id=d.center_id))]
    assert [r.id for r in exported] == [liu, zhang_landline, zhang_mobile]
    assert len(export_values(exported[0])) == len(EXPORT_COLUMNS)
    assert [r.id async for r in search.export_rows(admin, CallFilter(), limit=2)] == everything[:2]
    assert "13800000001" not in repr(exported)  # never a clear number


async def test_sql_and_html_in_text_filters_are_only_values(
        pool: asyncpg.Pool, vault: PiiVault, world: World) -> None:
    await add_call(pool, vault, at=T0, district_id=world.d.district_id, resident_id=world.d.resident_id)
    search = CallSearch(pool, vault)
    admin = viewer(world, "district_admin")
    for text in ("'; DROP TABLE call_records; --", "<script>alert(1)</script>", "张' OR '1'='1", "%", "_", "\\"):
        assert await ids(search, admin, CallFilter(resident_name=text)) == []
        assert await ids(search, admin, CallFilter(line=text)) == []
        with pytest.raises(ValueError, match="not a phone number"):
            await search.page(admin, CallFilter(caller_number=text))
    assert await pool.fetchval("SELECT count(*) FROM call_records") == 1


def test_bad_filter_values_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="unknown disposition 'lost': one of connected, missed"):
        CallFilter(disposition="lost")
    with pytest.raises(ValueError, match="time zone"):
        CallFilter(since=datetime(2026, 11, 23, 10, 0))  # noqa: DTZ001 (the naive datetime refused)
    with pytest.raises(ValueError, match="since must not be after until"):
        CallFilter(since=T0, until=T0 - timedelta(seconds=1))
    for bad in (0, -1, True, "3"):
        with pytest.raises(ValueError, match="center_id must be a positive integer"):
            CallFilter(center_id=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resident_name is too long"):
        CallFilter(resident_name="张" * 65)
    with pytest.raises(ValueError, match="resident_name must be a non-empty text"):
        CallFilter(resident_name="  ")
    with pytest.raises(ValueError, match="line is too long or not text"):
        CallFilter(line="a\x00b")


# -- keyset paging --------------------------------------------------------------------------------


async def test_pages_follow_each_other_without_gaps_or_repeats_even_at_equal_times(
        pool: asyncpg.Pool, vault: PiiVault, world: World) -> None:
    made = []
    for i in range(23):
        # 8 calls share one instant: the id breaks the tie
        at = T0 + timedelta(minutes=i if i < 15 else 15)
        made.append((at, await add_call(pool, vault, at=at, district_id=world.d.district_id)))
    expected = [record_id for _, record_id in sorted(made, reverse=True)]
    search = CallSearch(pool, vault)
    admin = viewer(world, "district_admin")
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = await search.page(admin, CallFilter(), after=cursor, limit=5)
        seen += [r.id for r in page.rows]
        pages += 1
        if pages == 2:  # a new call arriving meanwhile does not shift the pages after it
            await add_call(pool, vault, at=T0 + timedelta(hours=5), district_id=world.d.district_id)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected and pages == 5
    # exactly a full last page: no empty page after it
    page = await search.page(admin, CallFilter(until=T0 + timedelta(minutes=5)), limit=5)
    assert len(page.rows) == 5 and page.next_cursor is None


async def test_a_malformed_cursor_or_limit_is_refused(pool: asyncpg.Pool, vault: PiiVault, world: World) -> None:
    search = CallSearch(pool, vault)
    admin = viewer(world, "district_admin")
    good = encode_cursor(T0, 42)
    assert decode_cursor(good) == (T0, 42)
    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode()

    for bad in ("", "!!!", "x" * 200, b64("not a cursor"), good[:-3], good + "%", 42,
                b64("2026-11-23T10:00:00|123"),  # a naive time
                b64(f"{T0.isoformat()}|-1"), b64(f"{T0.isoformat()}|1e3"), b64(f"{T0.isoformat()}|"),
                b64(f"{T0.isoformat()}|{2**63}"), b64("'; DROP TABLE call_records; --|1")):
        with pytest.raises(ValueError, match="malformed cursor"):
            await search.page(admin, CallFilter(), after=bad)  # type: ignore[arg-type]
    for limit in (0, 501, True):
        with pytest.raises(ValueError, match="limit"):
            await search.page(admin, CallFilter(), limit=limit)


# -- scope ----------------------------------------------------------------------------------------


async def test_each_role_sees_its_calls_and_never_another_centers_or_districts(
        pool: asyncpg.Pool, vault: PiiVault, world: World, tmp_path: Path) -> None:
    d = world.d
    wav = tmp_path / "call.wav"
    wav.write_bytes(b"RIFF recording")
    rec = (str(wav), hashlib.sha256(b"RIFF recording").hexdigest())

    async def call(**kw) -> int:
        return await add_call(pool, vault, recording=rec, **kw)

    team_call = await call(at=T0, district_id=d.district_id, center_id=d.center_id, team_id=d.team_id,
                           resident_id=d.resident_id, rung=((d.doctor_id, "answered"),))
    agent_call = await call(at=T0 + timedelta(minutes=1), district_id=d.district_id,
                            rung=((d.agent_id, "answered"),))
    night_call = await call(at=NIGHT, district_id=d.district_id, center_id=d.center_id)
    center2_call = await call(at=T0 + timedelta(minutes=2), district_id=d.district_id, center_id=world.center2,
                              team_id=world.team2, rung=((world.doctor2, "answered"),))
    district2_call = await call(at=T0 + timedelta(minutes=3), district_id=world.district2,
                                center_id=world.center3)
    everything = {team_call, agent_call, night_call, center2_call, district2_call}
    visible = {
        "district_admin": {team_call, agent_call, night_call, center2_call},
        "supervisor": {team_call, agent_call, night_call, center2_call},
        "director": {team_call, night_call},
        "family_doctor": {team_call},
        "assistant": {team_call},
        "night_doctor": {night_call},
        "agent": {agent_call},
    }
    search = CallSearch(pool, vault)
    for role, mine in visible.items():
        scope = viewer(world, role)
        assert set(await ids(search, scope, CallFilter())) == mine, role
        assert await search.count(scope, CallFilter()) == len(mine), role
        assert {r.id async for r in search.export_rows(scope, CallFilter())} == mine, role
        # a filter naming another center's call finds nothing either
        assert await ids(search, scope, CallFilter(center_id=world.center3)) == [], role
        for record_id in everything:
            detail = await search.detail(scope, record_id)
            recording = await search.recording(scope, record_id)
            if record_id in mine:
                assert detail is not None and detail.row.id == record_id, role
                assert recording is not None and recording.path == wav, role
            else:
                assert detail is None and recording is None, (role, record_id)
    admin = viewer(world, "district_admin")
    assert await search.detail(admin, 10**12) is None
    assert await search.recording(admin, -1) is None


# -- detail, recordings, voicemails ---------------------------------------------------------------


async def test_the_detail_tells_the_calls_story_in_order(
        pool: asyncpg.Pool, vault: PiiVault, world: World, tmp_path: Path) -> None:
    d = world.d
    call_log = CallLog(CallRecords(pool, vault), Callbacks(pool), None)
    entry = call_log.open("story@x", CallerNumber.of(vault, "13800000001"), T0)
    await entry.open()
    await entry.identified(d.resident_id)
    await entry.placed(CallPlace("hotline", d.district_id, d.center_id, d.team_id))
    await entry.answered(T0 + timedelta(seconds=1))
    await entry.key_pressed(T0 + timedelta(seconds=4), "1", "menu")
    explanation = {"service": "day", "reason": "within the day window", "steps": [{"step": "own_doctor"}]}
    await entry.routed("day", "within the day window → own family doctor first",
                       [{"staff_id": d.doctor_id, "name": "王医生"}], explanation)
    first = await entry.dial_started(d.doctor_id, "sip:1001@127.0.0.1", T0 + timedelta(seconds=5))
    await entry.dial_ended(first, "no_answer", T0 + timedelta(seconds=25))
    second = await entry.dial_started(d.assistant_id, "sip:2001@127.0.0.1", T0 + timedelta(seconds=26))
    await entry.dial_ended(second, "answered", T0 + timedelta(seconds=30))
    await entry.held(T0 + timedelta(seconds=40), "staff", True, 39.0)
    await entry.held(T0 + timedelta(seconds=50), "staff", False, 49.0)
    wav = tmp_path / "story.wav"
    wav.write_bytes(b"RIFF" + bytes(1000))
    await entry.recorded(str(wav), 59.0, hashlib.sha256(wav.read_bytes()).hexdigest())
    await entry.ended(T0 + timedelta(seconds=60), "connected")
    record_id = entry.record_id
    assert record_id is not None

    search = CallSearch(pool, vault)
    detail = await search.detail(viewer(world, "assistant"), record_id)
    assert detail is not None
    assert [(e.kind, e.at - T0) for e in detail.timeline] == [
        ("offered", timedelta(0)), ("greeted", timedelta(seconds=1)), ("key_pressed", timedelta(seconds=4)),
        ("routed", timedelta(seconds=4)), ("ringing", timedelta(seconds=5)), ("dial_ended", timedelta(seconds=25)),
        ("ringing", timedelta(seconds=26)), ("dial_ended", timedelta(seconds=30)),
        ("connected", timedelta(seconds=30)), ("hold", timedelta(seconds=40)), ("resume", timedelta(seconds=50)),
        ("ended", timedelta(seconds=60))]
    assert detail.timeline[2].detail == {"key": "1", "menu": "menu"}
    assert detail.timeline[3].detail["reason"] == "within the day window → own family doctor first"
    assert detail.timeline[7].detail == {"seq": 2, "staff_id": d.assistant_id, "staff_name": "李助理",
                                         "outcome": "answered"}
    assert detail.route_explanation == explanation
    assert [(a.staff_name, a.outcome) for a in detail.attempts] == [("王医生", "no_answer"), ("李助理", "answered")]
    assert detail.row.answered_by_name == "李助理" and detail.row.time_to_answer_s == 30.0
    assert detail.recording is not None and detail.recording.on_disk and detail.recording.finished
    assert detail.callback is None

    ref = await search.recording(viewer(world, "assistant"), record_id)
    assert ref is not None and ref.seconds == 59.0
    assert await verify_checksum(ref.path, ref.sha256)
    wav.write_bytes(b"RIFF" + bytes(999) + b"x")  # changed on disk
    assert not await verify_checksum(ref.path, ref.sha256)
    wav.unlink()
    assert not await verify_checksum(ref.path, ref.sha256)
    gone = await search.detail(viewer(world, "assistant"), record_id)
    assert gone is not None and gone.recording is not None and not gone.recording.on_disk


async def test_a_missed_call_shows_its_callback_and_voicemail_within_scope(
        pool: asyncpg.Pool, vault: PiiVault, world: World, tmp_path: Path) -> None:
    d = world.d
    call_log = CallLog(CallRecords(pool, vault), Callbacks(pool), None)
    entry = call_log.open("missed@x", CallerNumber.of(vault, "13800000001"), T0)
    await entry.open()
    await entry.identified(d.resident_id)
    await entry.placed(CallPlace("hotline", d.district_id, d.center_id, d.team_id))
    await entry.answered(T0 + timedelta(seconds=1))
    seq = await entry.dial_started(d.doctor_id, "sip:1001@127.0.0.1", T0 + timedelta(seconds=5))
    await entry.dial_ended(seq, "no_answer", T0 + timedelta(seconds=25))
    owed = await entry.owe_callback(resident_id=d.resident_id, owner_staff_id=d.doctor_id, missed_at=T0)
    assert owed is not None and owed.task_id is not None
    message = tmp_path / "vm.wav"
    message.write_bytes(b"RIFF message")
    sha = hashlib.sha256(b"RIFF message").hexdigest()
    await entry.attach_voicemail(path=str(message), seconds=4.5, sha256=sha, recorded_at=T0 + timedelta(seconds=40))
    await entry.ended(T0 + timedelta(seconds=45), "missed")

    search = CallSearch(pool, vault)
    detail = await search.detail(viewer(world, "family_doctor"), entry.record_id)  # type: ignore[arg-type]
    assert detail is not None and detail.callback is not None
    assert detail.callback.task_id == owed.task_id and detail.callback.status == "open"
    assert detail.callback.due_at == T0 + timedelta(hours=8) and detail.callback.voicemail_seconds == 4.5
    kinds = [e.kind for e in detail.timeline]
    assert kinds[-3:] == ["voicemail", "callback_owed", "ended"]
    voicemail_id = detail.callback.voicemail_id
    assert voicemail_id is not None
    for role in ("family_doctor", "assistant", "director", "district_admin", "supervisor"):
        ref = await search.voicemail(viewer(world, role), voicemail_id)
        assert ref is not None and ref.path == message and ref.sha256 == sha, role
        assert await verify_checksum(ref.path, ref.sha256)
    for role in ("night_doctor", "agent"):  # neither the task nor the call is theirs
        assert await search.voicemail(viewer(world, role), voicemail_id) is None, role
    other = Scope(Viewer(world.doctor2, "D009", "周医生", "family_doctor", d.district_id, world.center2, world.team2))
    assert await search.voicemail(other, voicemail_id) is None
    assert await search.detail(other, entry.record_id) is None  # type: ignore[arg-type]
    assert await search.voicemail(viewer(world, "district_admin"), voicemail_id + 1000) is None


# -- the scope's arms merged equal the scope's OR -------------------------------------------------


async def test_the_arms_merged_list_count_and_export_exactly_what_the_scopes_or_finds(
        pool: asyncpg.Pool, vault: PiiVault, world: World) -> None:
    """A viewer of several arms (a team's calls OR the calls she took OR her shifts') is listed
    arm by arm, merged; on random calls, at equal times too, every page, count and export equals
    the plain OR of the scope, whichever filter."""
    import random

    d = world.d
    rng = random.Random(10)
    # a district-wide shift of the duty doctor after her week of the center's nights
    await pool.execute(
        "INSERT INTO duty_shifts (doctor_id, district_id, center_id, starts_at, ends_at)"
        " VALUES ($1, $2, NULL, $3, $4)", d.night_id, d.district_id,
        datetime(2026, 11, 30, 17, tzinfo=SH), datetime(2026, 12, 1, 8, tzinfo=SH))
    places = [(d.district_id, d.center_id, d.team_id), (d.district_id, d.center_id, None),
              (d.district_id, world.center2, world.team2), (d.district_id, None, None),
              (world.district2, world.center3, None)]
    answerers = [d.doctor_id, d.assistant_id, d.night_id, d.agent_id, world.doctor2, None]
    start = datetime(2026, 11, 22, 0, tzinfo=SH)
    times = [start + timedelta(minutes=rng.randrange(10 * 24 * 60)) for _ in range(150)]
    times += rng.sample(times, 30)  # calls at the very same instant: the keyset's tie on id
    for at in times:
        district_id, center_id, team_id = rng.choice(places)
        who = rng.choice(answerers)
        await add_call(pool, vault, at=at, district_id=district_id, center_id=center_id, team_id=team_id,
                       resident_id=rng.choice([d.resident_id, None]),
                       disposition="connected" if who else rng.choice(("missed", "abandoned")),
                       rung=((who, "answered"),) if who else ())
    search = CallSearch(pool, vault)
    night_with_team = Scope(Viewer(d.night_id, "N001", "night_doctor", "night_doctor", d.district_id,
                                   d.center_id, world.team2))
    scopes = [viewer(world, role) for role in ("family_doctor", "assistant", "night_doctor", "agent",
                                               "director")] + [night_with_team]
    filters = [CallFilter(), CallFilter(since=start + timedelta(days=2), until=start + timedelta(days=8)),
               CallFilter(center_id=d.center_id), CallFilter(disposition="missed"),
               CallFilter(resident_id=d.resident_id), CallFilter(staff_id=d.doctor_id),
               CallFilter(team_id=world.team2)]
    seen_multi_arm = 0
    for scope in scopes:
        seen_multi_arm += len(scope.calls_arms(Params(), "c")) > 1
        for filt in filters:
            p = Params()
            expected = [r["id"] for r in await pool.fetch(
                f"SELECT c.id FROM call_records c WHERE {search._where(scope, filt, p)}"  # noqa: S608 (test)
                " ORDER BY c.offered_at DESC, c.id DESC", *p.values)]
            listed, cursor = [], None
            while True:
                page = await search.page(scope, filt, after=cursor, limit=7)
                listed += [r.id for r in page.rows]
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert listed == expected, (scope.viewer.role, filt)
            assert await search.count(scope, filt) == len(expected), (scope.viewer.role, filt)
            assert await search.count(scope, filt, cap=3) == min(len(expected), 4), (scope.viewer.role, filt)
            assert [r.id async for r in search.export_rows(scope, filt)] == expected, (scope.viewer.role, filt)
    assert seen_multi_arm == 4  # the doctor, the assistant, both duty doctors: the merge was walked
    # and the data was such that the arms overlap and each adds calls of its own
    p = Params()
    arms = night_with_team.calls_arms(p, "c")
    columns = ", ".join(f"({arm.predicate}) AS arm{k}" for k, arm in enumerate(arms))
    rows = await pool.fetch(f"SELECT c.id, {columns} FROM call_records c", *p.values)  # noqa: S608 (test)
    arm_ids = [{r["id"] for r in rows if r[f"arm{k}"]} for k in range(len(arms))]
    assert len(arm_ids) == 4
    for k, mine in enumerate(arm_ids):
        others = set().union(*(a for j, a in enumerate(arm_ids) if j != k))
        assert mine - others and mine & others, k


# -- the staff filter: a person's dial attempts walked newest first -------------------------------


async def test_a_persons_calls_are_listed_exactly_however_few_of_hers_are_in_scope(
        pool: asyncpg.Pool, vault: PiiVault, world: World) -> None:
    """The staff filter walks the person's attempts newest first and stops (CallSearch._staff_walk):
    whether the walk finds a page's worth (her calls in the administrator's or her team's scope),
    runs out of attempts (a person rung for few calls), or gives up and tests them all at once (a
    center or a desk agent holding few of hers), every page, count and export equals the plain
    query — with attempts started after later calls were offered, and a call that rang her twice."""
    d = world.d
    her = d.assistant_id
    search = CallSearch(pool, vault)
    start = T0 - timedelta(hours=2)
    for k in range(50):
        base = start + timedelta(minutes=20 * k)  # 08:00 … 00:20: day calls, then her nights'
        center, team = (world.center2, world.team2) if k in (7, 31) else (d.center_id, d.team_id)
        common = {"district_id": d.district_id, "center_id": center, "team_id": team}
        # rung third, 20 s after it was offered: after the next call, offered 5 s later, rang her
        last = (d.agent_id, "answered") if k % 10 == 0 else (her, "answered")
        first = (her, "no_answer") if k % 10 == 0 else (d.agent_id, "busy")
        await add_call(pool, vault, at=base, rung=((d.doctor_id, "no_answer"), first, last), **common)
        await add_call(pool, vault, at=base + timedelta(seconds=5), disposition="missed",
                       rung=((her, "no_answer"),), **common)
    # rung twice for one call
    await add_call(pool, vault, at=start + timedelta(minutes=3), district_id=d.district_id,
                   center_id=d.center_id, team_id=d.team_id,
                   rung=((her, "no_answer"), (d.doctor_id, "busy"), (her, "answered")))
    # a person rung for a few calls only
    for k in range(5):
        await add_call(pool, vault, at=start + timedelta(minutes=20 * k + 7), district_id=d.district_id,
                       center_id=world.center2, team_id=world.team2, rung=((world.doctor2, "answered"),))
    director2 = Scope(Viewer(900004, "C002", "director", "director", d.district_id, world.center2, None))
    scopes = [viewer(world, role) for role in ("district_admin", "director", "family_doctor", "night_doctor",
                                               "agent")] + [director2]
    since = start + timedelta(hours=3)
    filters = [CallFilter(staff_id=her), CallFilter(staff_id=her, since=since),
               CallFilter(staff_id=her, until=since), CallFilter(staff_id=her, center_id=world.center2),
               CallFilter(staff_id=her, disposition="missed"), CallFilter(staff_id=world.doctor2),
               CallFilter(staff_id=d.agent_id, team_id=d.team_id)]
    seen_sizes = set()
    for scope in scopes:
        for filt in filters:
            p = Params()
            expected = [r["id"] for r in await pool.fetch(
                f"SELECT c.id FROM call_records c WHERE {search._where(scope, filt, p)}"  # noqa: S608 (test)
                " ORDER BY c.offered_at DESC, c.id DESC", *p.values)]
            seen_sizes.add(min(len(expected), 7))
            for limit in (3, 50):
                listed, cursor = [], None
                while True:
                    page = await search.page(scope, filt, after=cursor, limit=limit)
                    listed += [r.id for r in page.rows]
                    if page.next_cursor is None:
                        break
                    cursor = page.next_cursor
                assert listed == expected, (scope.viewer.role, filt, limit)
            assert await search.count(scope, filt) == len(expected), (scope.viewer.role, filt)
            assert [r.id async for r in search.export_rows(scope, filt)] == expected, (scope.viewer.role, filt)
    # pages of 3 walk 6 of at most 60 attempts: she has 101 — a scope with many of hers (walked to
    # the floor), with 1–5 (tested all at once), none; and the doctor's 5 (walked to the end)
    assert {0, 1, 2, 5, 7} <= seen_sizes


def plan_nodes(plan: dict) -> list[dict]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


async def test_a_person_and_an_agents_filters_read_their_indexes_among_40000_calls(
        pool: asyncpg.Pool, vault: PiiVault, world: World) -> None:
    """The plans at size: the staff filter walks the person's attempts by their index (never a
    table read whole, nothing big sorted); an agent's calls by center, line or disposition are
    tested in the index of the calls she answered."""
    d = world.d
    # 40 000 calls a minute apart, half of them the center's: a quarter missed; the agent answered
    # 1 in 4, the doctor half. Each rang one of five others first, 1 in 10 the doctor, and 1 in 7
    # the assistant after that.
    await pool.execute(
        """INSERT INTO call_records (call_id, offered_at, disposition, district_id, center_id, team_id,
                                     answered_by, line)
           SELECT 'bulk-' || i, $1::timestamptz + i * interval '1 minute',
                  CASE WHEN i % 4 = 0 THEN 'missed' ELSE 'connected' END, $2,
                  CASE WHEN i % 2 = 0 THEN $3::int ELSE $4::int END, CASE WHEN i % 2 = 0 THEN $5::int END,
                  CASE WHEN i % 4 = 0 THEN NULL WHEN i % 4 = 1 THEN $6::int ELSE $7::int END,
                  CASE WHEN i % 10 = 0 THEN '8001' ELSE 'hotline' END
             FROM generate_series(1, 40000) i""",
        T0 - timedelta(days=40), d.district_id, d.center_id, world.center2, d.team_id, d.agent_id, d.doctor_id)
    others = [d.night_id, d.departed_doctor_id, world.doctor2, d.agent_id, d.assistant_id]
    await pool.execute(
        """INSERT INTO dial_attempts (call_record_id, seq, staff_id, sip_uri, started_at, outcome)
           SELECT id, 1, CASE WHEN id % 10 = 0 THEN $1::int ELSE ($3::int[])[1 + id % 5] END,
                  'sip:x@127.0.0.1', offered_at + interval '5 seconds', 'no_answer'
             FROM call_records WHERE call_id LIKE 'bulk-%'
           UNION ALL
           SELECT id, 2, $2::int, 'sip:x@127.0.0.1', offered_at + interval '25 seconds', 'no_answer'
             FROM call_records WHERE call_id LIKE 'bulk-%' AND id % 7 = 0""",
        d.doctor_id, d.assistant_id, others)
    await pool.execute("VACUUM ANALYZE call_records")
    await pool.execute("VACUUM ANALYZE dial_attempts")
    search = CallSearch(pool, vault)
    cases = [(viewer(world, "district_admin"), CallFilter(staff_id=d.assistant_id)),
             (viewer(world, "director"), CallFilter(staff_id=d.doctor_id)),
             (viewer(world, "family_doctor"), CallFilter(staff_id=d.assistant_id, disposition="missed")),
             (viewer(world, "night_doctor"), CallFilter(staff_id=d.doctor_id)),
             (viewer(world, "agent"), CallFilter(center_id=world.center2)),
             (viewer(world, "agent"), CallFilter(line="8001")),
             (viewer(world, "agent"), CallFilter(disposition="missed"))]
    for scope, filt in cases:
        p = Params()
        sql = search._rows_sql(scope, filt, p, after=None, limit=51)
        plan = json.loads(await pool.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *p.values))[0]["Plan"]
        nodes = plan_nodes(plan)
        what = (scope.viewer.role, filt)
        assert not [n for n in nodes if n["Node Type"] == "Seq Scan"
                    and n.get("Relation Name") in ("call_records", "dial_attempts")], (what, plan)
        assert not any(n["Node Type"] == "Sort" and n.get("Plan Rows", 0) > 1000 for n in nodes), (what, plan)
        used = {n["Index Name"] for n in nodes if n.get("Relation Name") in ("call_records", "dial_attempts")}
        if filt.staff_id is not None:
            # her attempts by their index, newest first, a limited walk (not all of them sorted),
            # and their calls by id; neither table read, only the indexes
            attempts = [n for n in nodes if n.get("Relation Name") == "dial_attempts"]
            assert {(n["Node Type"], n["Index Name"]) for n in attempts} \
                == {("Index Only Scan", "dial_attempts_staff")}, (what, plan)
            assert any(n["Node Type"] == "Limit" and [c.get("Index Name") for c in n["Plans"]] == ["dial_attempts_staff"]
                       for n in nodes), (what, plan)
            assert used <= {"dial_attempts_staff", "call_records_scope_by_id", "call_records_pkey"}, (what, plan)
        else:
            # the agent's own calls, the filter tested in the index: nothing else of call_records
            assert used == {"call_records_answered_by", "call_records_pkey"}, (what, plan)
            walk = [n for n in nodes if n.get("Index Name") == "call_records_answered_by"]
            assert [n["Node Type"] for n in walk] == ["Index Only Scan"], (what, plan)
        # and finds what the plain query finds (the agent's: none of hers on that line or missed)
        q = Params()
        expected = [r["id"] for r in await pool.fetch(
            f"SELECT c.id FROM call_records c WHERE {search._where(scope, filt, q)}"  # noqa: S608 (test)
            " ORDER BY c.offered_at DESC, c.id DESC LIMIT 50", *q.values)]
        assert [r.id for r in (await search.page(scope, filt, limit=50)).rows] == expected, what
