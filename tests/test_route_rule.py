"""The route rule as a pure function: window edges, weekends, night shifts, unknown callers."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from routing.rule import Caller, Contract, ServiceHours, Shift, StaffMember, route

SH = ZoneInfo("Asia/Shanghai")
DOCTOR = StaffMember(1, "王医生", "family_doctor", "sip:1001@127.0.0.1", center_id=10, team_id=100, district_id=1)
ASSISTANT = StaffMember(2, "李助理", "assistant", "sip:2001@127.0.0.1", center_id=10, team_id=100, district_id=1)
NIGHT = StaffMember(3, "赵医生", "night_doctor", "sip:3001@127.0.0.1", center_id=10, district_id=1)
DISTRICT_NIGHT = StaffMember(4, "钱医生", "night_doctor", "sip:3009@127.0.0.1", district_id=1)
AGENT_CENTER = StaffMember(5, "孙客服", "agent", "sip:4001@127.0.0.1", center_id=10, district_id=1)
AGENT_DISTRICT = StaffMember(6, "周客服", "agent", "sip:4009@127.0.0.1", district_id=1)
AGENT_OTHER = StaffMember(7, "吴客服", "agent", "sip:4002@127.0.0.1", center_id=11, district_id=1)
DESK = (AGENT_OTHER, AGENT_DISTRICT, AGENT_CENTER)

CALLER = Caller(
    resident_id=42, name="张桂兰", center_id=10, district_id=1,
    contracts=(Contract(DOCTOR, date(2026, 1, 1), date(2026, 12, 31)),),
    assistants={DOCTOR.id: (ASSISTANT,)},
)

# Monday 2026-11-23
MONDAY = date(2026, 11, 23)


def at(d: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(d, time(hh, mm), SH)


def night_shift(d: date, doctor: StaffMember = NIGHT, center_id: int | None = 10,
                district_id: int = 1) -> Shift:
    """17:00 on day d until 08:00 the next morning."""
    return Shift(doctor, at(d, 17), at(d + timedelta(days=1), 8), center_id, district_id)


ROSTER = [
    night_shift(MONDAY - timedelta(days=1)),  # Sunday night into Monday morning
    night_shift(MONDAY),
    night_shift(MONDAY, DISTRICT_NIGHT, None),
    Shift(NIGHT, at(date(2026, 11, 28), 8), at(date(2026, 11, 28), 17), 10, 1),  # Saturday day
]


def ids(decision) -> list[int]:
    return [t.staff.id for t in decision.targets]


@pytest.mark.parametrize(
    ("hh", "mm", "service", "first"),
    [(7, 59, "night", NIGHT.id), (8, 0, "day", DOCTOR.id), (16, 59, "day", DOCTOR.id),
     (17, 0, "night", NIGHT.id)],
)
def test_window_edges_on_a_weekday(hh: int, mm: int, service: str, first: int) -> None:
    decision = route(CALLER, at(MONDAY, hh, mm), ROSTER, DESK)
    assert decision.service == service
    assert decision.targets[0].staff.id == first


def test_day_rings_own_doctor_then_assistant_with_reasons() -> None:
    decision = route(CALLER, at(MONDAY, 10), ROSTER, DESK)
    assert ids(decision) == [DOCTOR.id, ASSISTANT.id]
    assert "within day service (08:00–17:00 Mon–Fri)" in decision.reason
    assert decision.targets[0].reason == "own family doctor of 张桂兰"
    assert decision.targets[1].reason == "assistant of 王医生"


def test_night_rings_center_duty_doctor_before_district_backup() -> None:
    decision = route(CALLER, at(MONDAY, 21), ROSTER, DESK)
    assert ids(decision) == [NIGHT.id, DISTRICT_NIGHT.id]
    assert "outside day service" in decision.reason


def test_a_night_shift_owns_the_calls_across_midnight() -> None:
    tuesday_0230 = at(MONDAY + timedelta(days=1), 2, 30)
    decision = route(CALLER, tuesday_0230, ROSTER, DESK)
    assert ids(decision) == [NIGHT.id, DISTRICT_NIGHT.id]
    assert "11-23 17:00–11-24 08:00" in decision.targets[0].reason
    # and it ends at 08:00: the next morning is day service again
    assert route(CALLER, at(MONDAY + timedelta(days=1), 8), ROSTER, DESK).targets[0].staff == DOCTOR


def test_saturday_noon_is_rest_day_service() -> None:
    decision = route(CALLER, at(date(2026, 11, 28), 12), ROSTER, DESK)
    assert decision.service == "night"
    assert ids(decision) == [NIGHT.id]


def test_unknown_caller_goes_to_the_duty_desk_district_agents_first() -> None:
    decision = route(None, at(MONDAY, 10), ROSTER, DESK)
    assert decision.reason.startswith("unknown caller")
    assert ids(decision)[0] == AGENT_DISTRICT.id
    assert set(ids(decision)) == {a.id for a in DESK}


def test_caller_whose_doctor_has_left_goes_to_the_desk_of_their_center() -> None:
    gone = StaffMember(1, "王医生", "family_doctor", "sip:1001@127.0.0.1", 10, 100,
                       left_on=date(2026, 11, 1), district_id=1)
    caller = Caller(42, "张桂兰", 10, 1, (Contract(gone, date(2026, 1, 1), date(2026, 12, 31)),),
                    {gone.id: (ASSISTANT,)})
    decision = route(caller, at(MONDAY, 10), ROSTER, DESK)
    assert "family doctor 王医生 left on 2026-11-01" in decision.reason
    assert ids(decision)[0] == AGENT_CENTER.id  # own center's agent before the district's
    assert DOCTOR.id not in ids(decision)


def test_expired_contract_by_day_goes_to_the_desk() -> None:
    caller = Caller(42, "张桂兰", 10, 1, (Contract(DOCTOR, date(2025, 1, 1), date(2025, 12, 31)),))
    decision = route(caller, at(MONDAY, 10), ROSTER, DESK)
    assert "no contract in force" in decision.reason
    assert ids(decision)[0] == AGENT_CENTER.id


def test_a_roster_gap_falls_through_to_the_desk_never_to_silence() -> None:
    decision = route(CALLER, at(MONDAY + timedelta(days=3), 21), ROSTER, DESK)
    assert "roster gap" in decision.reason
    assert ids(decision)[0] == AGENT_CENTER.id


def test_a_duty_doctor_who_has_left_is_not_rung() -> None:
    gone = StaffMember(3, "赵医生", "night_doctor", "sip:3001@127.0.0.1", 10, left_on=MONDAY, district_id=1)
    decision = route(CALLER, at(MONDAY, 21), [night_shift(MONDAY, gone)], DESK)
    assert "roster gap" in decision.reason


def test_instants_in_other_zones_are_judged_in_shanghai_time() -> None:
    utc_0130 = datetime(2026, 11, 23, 1, 30, tzinfo=ZoneInfo("UTC"))  # 09:30 in Shanghai
    assert route(CALLER, utc_0130, ROSTER, DESK).service == "day"
    with pytest.raises(ValueError, match="aware"):
        route(CALLER, datetime(2026, 11, 23, 10), ROSTER, DESK)


def test_a_center_may_have_its_own_day_window() -> None:
    hours = ServiceHours(SH, time(7, 30), time(17, 30))
    assert route(CALLER, at(MONDAY, 7, 45), ROSTER, DESK, hours).service == "day"
    assert route(CALLER, at(MONDAY, 17, 15), ROSTER, DESK, hours).service == "day"


def test_another_districts_roster_and_desk_never_answer() -> None:
    elsewhere_night = StaffMember(8, "郑医生", "night_doctor", "sip:3099@127.0.0.1", district_id=2)
    elsewhere_agent = StaffMember(9, "冯客服", "agent", "sip:4099@127.0.0.1", district_id=2)
    roster = [*ROSTER, night_shift(MONDAY, elsewhere_night, None, district_id=2)]
    assert ids(route(CALLER, at(MONDAY, 21), roster, DESK)) == [NIGHT.id, DISTRICT_NIGHT.id]
    gap = route(CALLER, at(MONDAY + timedelta(days=3), 21), roster, (*DESK, elsewhere_agent))
    assert elsewhere_agent.id not in ids(gap)
