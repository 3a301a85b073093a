"""Route reasons rendered in Chinese for the console: every phrase the real calendar, chain and
presence write is in the table (a new English phrase fails here), and facts are never lost."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, time

from routing.calendar import CenterHours, Closure, SpecialDay, WorkingCalendar
from routing.chain import STEP_TITLES, HotlineLine, Leave, RoutingData, route_chain
from routing.people import Caller, Contract
from routing.presence import Kind, StaffState
from routing.reason_zh import STEP_TITLES_ZH, reason_zh, untranslated
from tests.test_route_chain import (
    AGENT_CENTER,
    AGENT_DISTRICT,
    ASSISTANT,
    CALLER,
    DISTRICT_NIGHT,
    DOCTOR,
    NIGHT_A,
    NIGHT_B,
    NURSE,
    SH,
    night,
)

CALENDAR = WorkingCalendar(
    special_days=(SpecialDay(date(2026, 10, 1), "holiday", "国庆节"),
                  SpecialDay(date(2026, 10, 10), "workday", "国庆节调休上班")),
    closures=(Closure(date(2026, 12, 3), "停电检修", center_id=10),
              Closure(date(2026, 12, 4), "全区培训", district_id=1)),
    centers=(CenterHours(10, "北塘街", 1, time(7, 30), time(17, 30)), CenterHours(11, "寨上街", 1)),
    districts={1: "滨海新区"}, tz=SH, years=(2026,))


def at(d: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(d, time(hh, mm), SH)


def routing_data(shifts=(), leaves=None) -> RoutingData:
    return RoutingData(calendar=CALENDAR, shifts=tuple(shifts), agents=(AGENT_CENTER, AGENT_DISTRICT),
                       team_members={100: (DOCTOR, ASSISTANT, NURSE)}, leaves=leaves or {}, tz=SH)


def every_reason() -> list[str]:
    """What the calendar, the chain and presence write across the cases they distinguish."""
    tuesday = date(2026, 11, 24)
    gone = replace(DOCTOR, left_on=date(2026, 11, 1))
    no_phone = replace(NURSE, sip_uri="")
    states = [StaffState(ASSISTANT.id, kind, since=at(tuesday, 9, 30) if kind not in (
        Kind.AVAILABLE, Kind.UNKNOWN) else None, as_of=at(tuesday, 10)) for kind in Kind]
    decisions = []
    for moment in (at(tuesday, 10), at(tuesday, 7, 45), at(tuesday, 21), at(date(2026, 11, 28), 10),
                   at(date(2026, 10, 1), 10), at(date(2026, 10, 10), 10), at(date(2026, 10, 10), 19),
                   at(date(2026, 12, 3), 10), at(date(2026, 12, 4), 10), at(date(2027, 3, 2), 10)):
        decisions.append(route_chain(CALLER, moment, routing_data()))
    for state in states:
        decisions.append(route_chain(CALLER, at(tuesday, 10), routing_data(), {ASSISTANT.id: state}))
    leave = Leave(DOCTOR.id, date(2026, 11, 20), date(2026, 11, 30), "进修")
    decisions.append(route_chain(CALLER, at(tuesday, 10), routing_data(leaves={DOCTOR.id: (leave,)})))
    team = {100: (gone, ASSISTANT, no_phone)}
    decisions.append(route_chain(Caller(42, "张桂兰", 10, 1, (Contract(gone, date(2026, 1, 1),
                                                                       date(2026, 12, 31)),), {}),
                                 at(tuesday, 10), replace(routing_data(), team_members=team)))
    decisions.append(route_chain(Caller(42, "张桂兰", 10, 1, (), {}), at(tuesday, 10), routing_data()))
    decisions.append(route_chain(None, at(tuesday, 10), routing_data(), line=HotlineLine("96002", 1, label="总机")))
    decisions.append(route_chain(None, at(tuesday, 10), routing_data(),
                                 line=HotlineLine("8010", 1, center_id=10, label="北塘专线")))
    decisions.append(route_chain(None, at(tuesday, 21), routing_data()))
    shifts = (night(NIGHT_A), night(NIGHT_B, position=1, swapped_from="陈医生"),
              night(DISTRICT_NIGHT, center_id=None, kind="backup"),
              night(NIGHT_B, center_id=10, kind="backup", position=2))
    decisions.append(route_chain(CALLER, at(tuesday, 21), routing_data(shifts)))
    decisions.append(route_chain(CALLER, at(tuesday, 21), routing_data(shifts[:1] + shifts[3:])))
    texts = []
    for d in decisions:
        texts.append(d.reason)
        for s in d.steps:
            texts.append(s.reason)
            texts += [t.reason for t in s.targets] + [k.reason for k in s.skipped]
    return texts


def test_every_phrase_routing_writes_is_rendered_in_chinese() -> None:
    reasons = every_reason()
    assert len(set(reasons)) > 40
    left = {r: untranslated(reason_zh(r)) for r in reasons}
    # Redis is a name, not a phrase
    assert {r: words for r, words in left.items() if set(words) - {"Redis"}} == {}
    assert set(STEP_TITLES_ZH) == set(STEP_TITLES)


def test_the_facts_of_a_reason_survive_the_rendering() -> None:
    tuesday = date(2026, 11, 24)
    shifts = (night(NIGHT_B, swapped_from="陈医生"),)
    decision = route_chain(CALLER, at(tuesday, 21), routing_data(shifts))
    assert reason_zh(decision.reason) == (
        "2026-11-24 21:00 不在北塘街日间时段 07:30–17:30 → 夜间服务 → 排班值班医生")
    assert reason_zh("2026-10-01 is a public holiday (国庆节) → night service") == (
        "2026-10-01 是法定节假日（国庆节） → 夜间服务")
    assert reason_zh("王医生 on leave until 11-30 (进修) → skipped") == "王医生休假至11-30 (进修) → 跳过"
    assert reason_zh("Tue 2026-11-24 is a working day") == "2026-11-24（周二）是工作日"
    # what the table does not know is kept whole
    assert reason_zh("转给 张医生 (manual)") == "转给 张医生 (manual)"
    assert untranslated(reason_zh("转给 张医生 (manual)")) == ["manual"]
