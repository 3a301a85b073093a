"""Who answers a call, step by step: the fallback chain a district health commission needs.

A pure function of (caller, instant, routing data, presence). By day — a working day by the
calendar, inside the caller's center's window — the chain is

    own family doctor → that doctor's assistant(s) → the rest of the team
    → the center's call-center agents → voicemail and callback;

by night, at weekends and on holidays

    the center's duty doctor(s) → backup duty doctor(s) → the district duty desk
    → voicemail and callback.

An unknown caller, or one without a doctor in force, starts at the agents (their center's by
day, the district desk by night). A roster gap falls through to the desk — never to silence.
Each step says why it is there and each person left out says why (left, on leave, busy, do not
disturb, offline), so `hotline route --json` and every call record hold the same explanation.
Duty doctors on the same ring position ring together (ring-all); different positions ring in
order. Ring timeouts are configuration, per step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from routing.people import Caller, StaffMember

# Steps in chain order, with the default ring timeout of each (seconds).
DEFAULT_RING_TIMEOUTS: dict[str, float] = {
    "own_doctor": 20, "assistant": 15, "team": 15, "center_agents": 20,
    "duty": 25, "backup": 20, "desk": 30,
}
STEP_TITLES = {
    "own_doctor": "own family doctor", "assistant": "the doctor's assistant",
    "team": "the rest of the team", "center_agents": "the center's call-center agents",
    "duty": "duty doctor", "backup": "backup duty doctor", "desk": "district duty desk",
    "voicemail": "voicemail and callback",
}


class ServiceDay(Protocol):
    day: bool
    reason: str


class ServiceCalendar(Protocol):
    def day_service(self, at: datetime, center_id: int | None = None, *,
                    district_id: int | None = None) -> ServiceDay: ...


class PresenceView(Protocol):
    """What the rule needs of a person's live state (routing.presence)."""

    @property
    def ringable(self) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class DutyShift:
    doctor: StaffMember
    starts_at: datetime
    ends_at: datetime
    center_id: int | None  # None: the whole district
    district_id: int
    kind: str = "duty"  # 'duty' or 'backup'
    ring_position: int = 1  # equal positions ring together
    swapped_from: str | None = None  # the doctor's name the shift was swapped from

    def covers(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


@dataclass(frozen=True)
class Leave:
    staff_id: int
    starts_on: date
    ends_on: date
    reason: str = ""

    def covers(self, on: date) -> bool:
        return self.starts_on <= on <= self.ends_on


@dataclass(frozen=True)
class HotlineLine:
    """A number residents dial (专属分机号): whose chain and greeting it selects."""

    number: str
    district_id: int
    center_id: int | None = None
    label: str = ""
    greeting: str | None = None  # a prompt file of the line's own


@dataclass(frozen=True)
class RoutingData:
    """Everything but the caller and presence: the same for every call at a given minute, so it
    is loaded once and cached (routing.snapshot)."""

    calendar: ServiceCalendar
    shifts: Sequence[DutyShift] = ()
    agents: Sequence[StaffMember] = ()  # role 'agent'; center_id None = district duty desk
    team_members: Mapping[int, Sequence[StaffMember]] = field(default_factory=dict)
    leaves: Mapping[int, Sequence[Leave]] = field(default_factory=dict)
    ring_timeouts: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RING_TIMEOUTS))
    tz: Any = None  # for dates in reasons; the calendar's zone
    lines: Mapping[str, HotlineLine] = field(default_factory=dict)  # by dialled number

    def on_leave(self, staff_id: int, on: date) -> Leave | None:
        return next((lv for lv in self.leaves.get(staff_id, ()) if lv.covers(on)), None)


@dataclass(frozen=True)
class Target:
    staff: StaffMember
    reason: str
    group: int = 0  # targets of one step with the same group ring together


@dataclass(frozen=True)
class Skipped:
    staff: StaffMember
    reason: str
    busy: bool = False  # on another call right now (callers may queue for them)


@dataclass(frozen=True)
class Step:
    name: str
    reason: str
    targets: tuple[Target, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    ring_timeout_s: float = 0.0

    def groups(self) -> list[tuple[Target, ...]]:
        """The targets as ringing rounds: each round rings its targets together."""
        rounds: dict[int, list[Target]] = {}
        for t in self.targets:
            rounds.setdefault(t.group, []).append(t)
        return [tuple(rounds[g]) for g in sorted(rounds)]


@dataclass(frozen=True)
class ChainDecision:
    service: str  # 'day' or 'night'
    reason: str  # why day or night (the calendar's explanation), and how the chain starts
    steps: tuple[Step, ...]

    @property
    def targets(self) -> tuple[Target, ...]:
        """Everyone to ring, in order (the steps flattened)."""
        return tuple(t for s in self.steps for t in s.targets)

    def as_json(self) -> dict[str, Any]:
        return {
            "service": self.service, "reason": self.reason,
            # everyone to ring, in order, with the step they belong to
            "targets": [{"staff_id": t.staff.id, "name": t.staff.name, "role": t.staff.role,
                         "sip_uri": t.staff.sip_uri, "reason": t.reason, "step": s.name}
                        for s in self.steps for t in s.targets],
            "steps": [{
                "step": s.name, "title": STEP_TITLES[s.name], "reason": s.reason,
                "ring_timeout_s": s.ring_timeout_s,
                "targets": [{"staff_id": t.staff.id, "name": t.staff.name, "role": t.staff.role,
                             "sip_uri": t.staff.sip_uri, "reason": t.reason, "ring_group": t.group}
                            for t in s.targets],
                "skipped": [{"staff_id": k.staff.id, "name": k.staff.name, "reason": k.reason}
                            for k in s.skipped],
            } for s in self.steps],
        }


class _Builder:
    """Collects steps; a person appears at most once in the chain (their first step)."""

    def __init__(self, data: RoutingData, presence: Mapping[int, PresenceView], on: date):
        self.data = data
        self.presence = presence
        self.on = on
        self.steps: list[Step] = []
        self.seen: set[int] = set()

    def busy(self, person: StaffMember) -> bool:
        return bool(getattr(self.presence.get(person.id), "busy", False))

    def why_not(self, person: StaffMember) -> str | None:
        if person.has_left(self.on):
            return f"{person.name} left on {person.left_on}"
        leave = self.data.on_leave(person.id, self.on)
        if leave is not None:
            what = f" ({leave.reason})" if leave.reason else ""
            return f"{person.name} on leave until {leave.ends_on:%m-%d}{what}"
        if not person.sip_uri:
            return f"{person.name} has no softphone"
        state = self.presence.get(person.id)
        if state is not None and not state.ringable:
            return f"{person.name} {state.describe()}"
        return None

    def add(self, name: str, reason: str, people: Iterable[tuple[StaffMember, str, int]]) -> None:
        targets, skipped = [], []
        for person, why, group in people:
            if person.id in self.seen:
                continue
            self.seen.add(person.id)
            excuse = self.why_not(person)
            if excuse is None:
                targets.append(Target(person, why, group))
            else:
                skipped.append(Skipped(person, f"{excuse} → skipped", self.busy(person)))
        if targets or skipped:
            self.steps.append(Step(name, reason, tuple(targets), tuple(skipped),
                                   float(self.data.ring_timeouts.get(name, DEFAULT_RING_TIMEOUTS[name]))))

    def agents(self, center_id: int | None, district_id: int | None, why: str) -> None:
        """The center's agents (by day), or the district duty desk."""
        if center_id is not None:
            people = [a for a in self.data.agents if a.center_id == center_id]
            self.add("center_agents", why, [(a, "call-center agent of the center", 0) for a in people])
        else:
            people = [a for a in self.data.agents if a.center_id is None
                      and (district_id is None or a.district_id == district_id)]
            self.add("desk", why, [(a, "district duty desk", 0) for a in people])

    def finish(self, service: str, reason: str) -> ChainDecision:
        self.steps.append(Step("voicemail", "nobody answered: the caller leaves a message and is called back"
                                            " within 8 hours"))
        return ChainDecision(service, reason, tuple(self.steps))


def route_chain(caller: Caller | None, at: datetime, data: RoutingData,
                presence: Mapping[int, PresenceView] | None = None,
                line: HotlineLine | None = None) -> ChainDecision:
    """The chain for a call at `at`. `line` is the hotline number dialled: for an unknown caller
    it selects the district and, for a center's own number, that center's agents first; a
    known caller's own center and district win."""
    if at.tzinfo is None:
        raise ValueError("route_chain() needs an aware datetime")
    # Shifts come from PostgreSQL in UTC; comparing them with an instant in another zone costs
    # 20× more per comparison (measured by bench/route), so compare in UTC.
    at = at.astimezone(UTC)
    center_id = caller.center_id if caller else (line.center_id if line else None)
    district = caller.district_id if caller else (line.district_id if line else None)
    service_day = data.calendar.day_service(at, center_id, district_id=district)
    service = "day" if service_day.day else "night"
    local = at.astimezone(data.tz) if data.tz else at
    b = _Builder(data, presence or {}, local.date())

    if caller is None:
        dialled = f" on {line.label or line.number}" if line else ""
        why = f"{service_day.reason}; unknown caller (not a registered resident){dialled}"
        if service_day.day and center_id is not None:
            b.agents(center_id, district, "unknown caller on the center's own number → its agents")
        b.agents(None, district, "unknown caller → district duty desk")
        return b.finish(service, why)

    if service_day.day:
        return _day_chain(caller, service_day.reason, b)
    return _night_chain(caller, at, service_day.reason, b)


def _day_chain(caller: Caller, calendar_reason: str, b: _Builder) -> ChainDecision:
    contract = next((c for c in caller.contracts if c.in_force(b.on)), None)
    if contract is None:
        why = f"{calendar_reason}; {caller.name} has no contract in force → the center's agents"
        b.agents(caller.center_id, caller.district_id, "no family doctor under contract")
        b.agents(None, caller.district_id, "the center's agents are not available")
        return b.finish("day", why)
    doctor = contract.doctor
    b.add("own_doctor", f"own family doctor of {caller.name}", [(doctor, "family doctor under contract", 0)])
    b.add("assistant", f"the assistant answers for {doctor.name}",
          [(a, f"assistant of {doctor.name}", 0) for a in caller.assistants.get(doctor.id, ())])
    team = b.data.team_members.get(doctor.team_id, ()) if doctor.team_id is not None else ()
    b.add("team", f"the rest of {doctor.name}'s team",
          [(m, "member of the team", 0) for m in team])
    b.agents(caller.center_id, caller.district_id, "nobody of the team answered")
    b.agents(None, caller.district_id, "the center's agents are not available")
    return b.finish("day", f"{calendar_reason} → own family doctor first")


def _night_chain(caller: Caller, at: datetime, calendar_reason: str, b: _Builder) -> ChainDecision:
    on_duty = [s for s in b.data.shifts if s.district_id == caller.district_id and s.covers(at)]
    own_center = sorted((s for s in on_duty if s.center_id == caller.center_id and s.kind == "duty"),
                        key=lambda s: (s.ring_position, s.doctor.id))
    backup = sorted((s for s in on_duty if (s.center_id == caller.center_id and s.kind == "backup")
                     or s.center_id is None),
                    key=lambda s: (s.center_id is None, s.ring_position, s.doctor.id))
    tz = b.data.tz

    def window(s: DutyShift) -> str:
        start, end = (s.starts_at.astimezone(tz), s.ends_at.astimezone(tz)) if tz else (s.starts_at, s.ends_at)
        swap = f", swapped from {s.swapped_from}" if s.swapped_from else ""
        return f"{start:%m-%d %H:%M}–{end:%m-%d %H:%M}{swap}"

    if own_center:
        ring_all = len({s.ring_position for s in own_center}) < len(own_center)
        how = "ring together" if ring_all else "in ring order"
        b.add("duty", f"on duty for the center ({how})",
              [(s.doctor, f"on duty {window(s)}", s.ring_position) for s in own_center])
        why = f"{calendar_reason} → duty doctor on the roster"
    else:
        why = f"{calendar_reason}; no duty doctor for the center on the roster (roster gap)"
    b.add("backup", "backup duty doctor",
          [(s.doctor, f"{'district' if s.center_id is None else 'center'} backup {window(s)}", s.ring_position)
           for s in backup])
    if not on_duty:
        why = f"{calendar_reason}; nobody on the roster (roster gap) → district duty desk"
    b.agents(None, caller.district_id, "no duty doctor answered")
    return b.finish("night", why)
