"""The fallback chain as a pure function: steps in order, who is skipped and why, ring order and
ring-all at night, backup, roster gaps, leave, presence, and the explanation as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from routing.chain import DutyShift, HotlineLine, Leave, RoutingData, route_chain
from routing.people import Caller, Contract, StaffMember

SH = ZoneInfo("Asia/Shanghai")
DOCTOR = StaffMember(1, "王医生", "family_doctor", "sip:1001@127.0.0.1", center_id=10, team_id=100, district_id=1)
ASSISTANT = StaffMember(2, "李助理", "assistant", "sip:2001@127.0.0.1", center_id=10, team_id=100, district_id=1)
NURSE = StaffMember(8, "郑护士", "nurse", "sip:2101@127.0.0.1", center_id=10, team_id=100, district_id=1)
NIGHT_A = StaffMember(3, "赵医生", "night_doctor", "sip:3001@127.0.0.1", center_id=10, district_id=1)
NIGHT_B = StaffMember(9, "冯医生", "night_doctor", "sip:3002@127.0.0.1", center_id=10, district_id=1)
NIGHT_C = StaffMember(11, "陈医生", "night_doctor", "sip:3003@127.0.0.1", center_id=10, district_id=1)
DISTRICT_NIGHT = StaffMember(4, "钱医生", "night_doctor", "sip:3009@127.0.0.1", district_id=1)
AGENT_CENTER = StaffMember(5, "孙客服", "agent", "sip:4001@127.0.0.1", center_id=10, district_id=1)
AGENT_DISTRICT = StaffMember(6, "周客服", "agent", "sip:4009@127.0.0.1", district_id=1)
AGENT_OTHER = StaffMember(7, "吴客服", "agent", "sip:4002@127.0.0.1", center_id=11, district_id=1)
AGENT_OTHER_DISTRICT = StaffMember(12, "外区客服", "agent", "sip:4099@127.0.0.1", district_id=2)

CALLER = Caller(
    resident_id=42, name="张桂兰", center_id=10, district_id=1,
    contracts=(Contract(DOCTOR, date(2026, 1, 1), date(2026, 12, 31)),),
    assistants={DOCTOR.id: (ASSISTANT,)},
)
TUESDAY = date(2026, 11, 24)


@dataclass(frozen=True)
class _Day:
    day: bool
    reason: str


class WeekdayCalendar:
    """Mon–Fri 08:00–17:00: the calendar's own rules are tested in tests/test_calendar.py; this
    file tests what the chain does with a day/night answer."""

    def day_service(self, at: datetime, center_id: int | None = None, *,
                    district_id: int | None = None) -> _Day:
        local = at.astimezone(SH)
        day = local.weekday() < 5 and time(8) <= local.time() < time(17)
        return _Day(day, f"{local:%Y-%m-%d %H:%M} is {'day' if day else 'night'} service")


@dataclass(frozen=True)
class State:
    ringable: bool
    text: str

    def describe(self) -> str:
        return self.text


def at(d: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(d, time(hh, mm), SH)


def night(doctor: StaffMember, d: date = TUESDAY, center_id: int | None = 10, kind: str = "duty",
          position: int = 1, swapped_from: str | None = None) -> DutyShift:
    """17:00 on day d until 08:00 the next morning."""
    return DutyShift(doctor, at(d, 17), at(d + timedelta(days=1), 8), center_id, 1, kind, position,
                     swapped_from)


def data(shifts=(), leaves=None) -> RoutingData:
    return RoutingData(
        calendar=WeekdayCalendar(), shifts=tuple(shifts),
        agents=(AGENT_OTHER, AGENT_DISTRICT, AGENT_CENTER, AGENT_OTHER_DISTRICT),
        team_members={100: (DOCTOR, ASSISTANT, NURSE)}, leaves=leaves or {},
        ring_timeouts={"own_doctor": 20, "assistant": 12, "duty": 30}, tz=SH)


def chain(decision) -> list[tuple[str, list[int]]]:
    return [(s.name, [t.staff.id for t in s.targets]) for s in decision.steps]


def test_day_chain_own_doctor_assistant_team_center_agents_desk_voicemail() -> None:
    decision = route_chain(CALLER, at(TUESDAY, 10), data())
    assert decision.service == "day"
    assert chain(decision) == [
        ("own_doctor", [DOCTOR.id]), ("assistant", [ASSISTANT.id]), ("team", [NURSE.id]),
        ("center_agents", [AGENT_CENTER.id]), ("desk", [AGENT_DISTRICT.id]), ("voicemail", []),
    ]
    timeouts = {s.name: s.ring_timeout_s for s in decision.steps}
    assert timeouts["own_doctor"] == 20 and timeouts["assistant"] == 12  # configured
    assert timeouts["team"] == 15  # default


def test_doctor_on_leave_is_skipped_with_the_reason() -> None:
    leave = Leave(DOCTOR.id, date(2026, 11, 20), date(2026, 11, 30), "进修")
    decision = route_chain(CALLER, at(TUESDAY, 10), data(leaves={DOCTOR.id: (leave,)}))
    own = decision.steps[0]
    assert own.name == "own_doctor" and own.targets == ()
    assert own.skipped[0].reason == "王医生 on leave until 11-30 (进修) → skipped"
    assert decision.targets[0].staff == ASSISTANT
    # the day after the leave she is back
    back = route_chain(CALLER, at(date(2026, 12, 1), 10), data(leaves={DOCTOR.id: (leave,)}))
    assert back.targets[0].staff == DOCTOR


def test_busy_and_dnd_people_are_skipped_at_once_with_their_state() -> None:
    presence = {DOCTOR.id: State(False, "busy (on call since 10:02)"),
                ASSISTANT.id: State(False, "do not disturb since 09:30"),
                NURSE.id: State(True, "available")}
    decision = route_chain(CALLER, at(TUESDAY, 10, 5), data(), presence)
    assert decision.targets[0].staff == NURSE
    skipped = [k.reason for s in decision.steps for k in s.skipped]
    assert skipped == ["王医生 busy (on call since 10:02) → skipped",
                       "李助理 do not disturb since 09:30 → skipped"]


def test_doctor_who_left_and_caller_without_contract_go_to_the_centers_agents() -> None:
    gone = StaffMember(1, "王医生", "family_doctor", "sip:1001@127.0.0.1", center_id=10, team_id=100,
                       left_on=date(2026, 11, 1), district_id=1)
    caller = Caller(42, "张桂兰", 10, 1, (Contract(gone, date(2026, 1, 1), date(2026, 12, 31)),), {})
    decision = route_chain(caller, at(TUESDAY, 10), data())
    assert decision.steps[0].skipped[0].reason == "王医生 left on 2026-11-01 → skipped"
    expired = Caller(42, "张桂兰", 10, 1, (Contract(DOCTOR, date(2025, 1, 1), date(2025, 12, 31)),), {})
    decision = route_chain(expired, at(TUESDAY, 10), data())
    assert chain(decision)[0] == ("center_agents", [AGENT_CENTER.id])
    assert "no contract in force" in decision.reason


def test_unknown_caller_goes_to_the_district_desk_of_the_number_dialled() -> None:
    decision = route_chain(None, at(TUESDAY, 10), data(), line=HotlineLine("96002", 2, label="外区热线"))
    assert chain(decision) == [("desk", [AGENT_OTHER_DISTRICT.id]), ("voicemail", [])]
    assert "unknown caller (not a registered resident) on 外区热线" in decision.reason


def test_a_centers_own_number_selects_its_agents_first_for_unknown_callers() -> None:
    line = HotlineLine("8011", 1, center_id=11, label="寨上朝阳专线")
    assert chain(route_chain(None, at(TUESDAY, 10), data(), line=line)) == [
        ("center_agents", [AGENT_OTHER.id]), ("desk", [AGENT_DISTRICT.id]), ("voicemail", [])]
    # at night the center's agents are off: the district desk
    assert chain(route_chain(None, at(TUESDAY, 21), data(), line=line))[0] == ("desk", [AGENT_DISTRICT.id])
    # a resident the directory knows keeps their own chain whatever number they dial
    assert route_chain(CALLER, at(TUESDAY, 10), data(), line=line).targets[0].staff == DOCTOR


def test_night_duty_doctors_in_ring_order_then_backup_then_desk() -> None:
    shifts = [night(NIGHT_B, position=2), night(NIGHT_A, position=1),
              night(DISTRICT_NIGHT, center_id=None, kind="backup")]
    decision = route_chain(CALLER, at(TUESDAY, 21), data(shifts))
    assert decision.service == "night"
    assert chain(decision) == [("duty", [NIGHT_A.id, NIGHT_B.id]), ("backup", [DISTRICT_NIGHT.id]),
                               ("desk", [AGENT_DISTRICT.id]), ("voicemail", [])]
    duty = decision.steps[0]
    assert [len(g) for g in duty.groups()] == [1, 1]  # one after the other
    assert "in ring order" in duty.reason
    assert duty.ring_timeout_s == 30


def test_duty_doctors_on_the_same_position_ring_together() -> None:
    shifts = [night(NIGHT_A), night(NIGHT_B), night(NIGHT_C, position=2)]
    duty = route_chain(CALLER, at(TUESDAY, 21), data(shifts)).steps[0]
    assert [[t.staff.id for t in g] for g in duty.groups()] == [[NIGHT_A.id, NIGHT_B.id], [NIGHT_C.id]]
    assert "ring together" in duty.reason


def test_a_center_backup_shift_rings_before_the_district_backup() -> None:
    shifts = [night(NIGHT_A), night(DISTRICT_NIGHT, center_id=None), night(NIGHT_B, kind="backup")]
    decision = route_chain(CALLER, at(TUESDAY, 21), data(shifts))
    assert chain(decision)[:2] == [("duty", [NIGHT_A.id]), ("backup", [NIGHT_B.id, DISTRICT_NIGHT.id])]


def test_a_night_shift_covers_the_hours_after_midnight() -> None:
    decision = route_chain(CALLER, at(TUESDAY + timedelta(days=1), 2, 30), data([night(NIGHT_A)]))
    assert chain(decision)[0] == ("duty", [NIGHT_A.id])
    assert "11-24 17:00–11-25 08:00" in decision.steps[0].targets[0].reason


def test_roster_gap_falls_through_to_the_desk_never_silence() -> None:
    decision = route_chain(CALLER, at(TUESDAY, 21), data([]))
    assert chain(decision) == [("desk", [AGENT_DISTRICT.id]), ("voicemail", [])]
    assert "roster gap" in decision.reason
    # only the district backup is there: still a doctor before the desk
    decision = route_chain(CALLER, at(TUESDAY, 21), data([night(DISTRICT_NIGHT, center_id=None)]))
    assert chain(decision)[0] == ("backup", [DISTRICT_NIGHT.id])
    assert "no duty doctor for the center" in decision.reason


def test_a_swapped_shift_says_so() -> None:
    decision = route_chain(CALLER, at(TUESDAY, 21), data([night(NIGHT_B, swapped_from="赵医生")]))
    assert decision.targets[0].reason.endswith("swapped from 赵医生")


def test_someone_on_two_steps_is_rung_once() -> None:
    # the family doctor also holds tonight's duty: at night she is a duty doctor, once
    decision = route_chain(CALLER, at(TUESDAY, 21), data([night(DOCTOR), night(NIGHT_A, kind="backup")]))
    assert [t.staff.id for t in decision.targets].count(DOCTOR.id) == 1


def test_explanation_as_json() -> None:
    leave = Leave(ASSISTANT.id, date(2026, 11, 24), date(2026, 11, 24), "")
    explained = route_chain(CALLER, at(TUESDAY, 10), data(leaves={ASSISTANT.id: (leave,)})).as_json()
    assert explained["service"] == "day"
    steps = {s["step"]: s for s in explained["steps"]}
    assert steps["own_doctor"]["targets"][0] == {
        "staff_id": DOCTOR.id, "name": "王医生", "role": "family_doctor",
        "sip_uri": "sip:1001@127.0.0.1", "reason": "family doctor under contract", "ring_group": 0}
    assert steps["assistant"]["skipped"] == [
        {"staff_id": ASSISTANT.id, "name": "李助理", "reason": "李助理 on leave until 11-24 → skipped"}]
    assert explained["steps"][-1]["step"] == "voicemail"
