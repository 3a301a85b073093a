"""Who answers a call now: a pure function of (caller record, instant, roster, duty desk).

First cut (issue 2): day service 08:00–17:00 Monday–Friday in the center's time zone rings the
caller's own family doctor, then the doctor's team assistants; any other time rings the duty
doctors on the roster at that instant (the caller's center's shift first, then district-wide
shifts). An unknown caller, a caller without a doctor in force, or a roster gap goes to the duty
desk (call-center agents) — never to silence. The working-day calendar, fallback chains and
presence (issue 4) extend this function; they do not replace its shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class StaffMember:
    id: int
    name: str
    role: str
    sip_uri: str | None
    center_id: int | None = None
    team_id: int | None = None
    left_on: date | None = None
    district_id: int | None = None

    def has_left(self, on: date) -> bool:
        return self.left_on is not None and self.left_on <= on


@dataclass(frozen=True)
class Contract:
    doctor: StaffMember
    starts_on: date
    ends_on: date

    def in_force(self, on: date) -> bool:
        return self.starts_on <= on <= self.ends_on


@dataclass(frozen=True)
class Caller:
    resident_id: int
    name: str
    center_id: int
    district_id: int
    contracts: tuple[Contract, ...] = ()
    # The assistants who answer for each of the caller's contracted doctors, by doctor id.
    assistants: dict[int, tuple[StaffMember, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Shift:
    doctor: StaffMember
    starts_at: datetime
    ends_at: datetime
    center_id: int | None  # None: the whole district
    district_id: int

    def covers(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


@dataclass(frozen=True)
class ServiceHours:
    tz: ZoneInfo = ZoneInfo("Asia/Shanghai")
    day_start: time = time(8, 0)
    day_end: time = time(17, 0)

    def is_day_service(self, at: datetime) -> bool:
        local = at.astimezone(self.tz)
        return local.weekday() < 5 and self.day_start <= local.time() < self.day_end


@dataclass(frozen=True)
class Target:
    staff: StaffMember
    reason: str


@dataclass(frozen=True)
class RouteDecision:
    service: str  # 'day' or 'night'
    targets: tuple[Target, ...]
    reason: str


def _desk_targets(desk: Sequence[StaffMember], caller: Caller | None, why: str, on: date) -> list[Target]:
    """The caller's district's agents, their own center's first; any agent for an unknown caller.

    (Which district an unknown caller belongs to is decided by the number they dialled once
    districts have their own hotline numbers — issue 4.)
    """
    center_id = caller.center_id if caller else None
    present = [s for s in desk if not s.has_left(on)
               and (caller is None or s.district_id == caller.district_id)]
    # The caller's own center's agents first, then the district's.
    ordered = sorted(present, key=lambda s: (s.center_id != center_id, s.center_id is not None, s.id))
    return [Target(s, f"{why} → duty desk") for s in ordered]


def route(
    caller: Caller | None,
    at: datetime,
    roster: Sequence[Shift],
    desk: Sequence[StaffMember],
    hours: ServiceHours = ServiceHours(),
) -> RouteDecision:
    if at.tzinfo is None:
        raise ValueError("route() needs an aware datetime")
    local = at.astimezone(hours.tz)
    today = local.date()
    stamp = local.strftime("%Y-%m-%d %H:%M %a")
    day = hours.is_day_service(at)
    service = "day" if day else "night"
    window = f"{hours.day_start:%H:%M}–{hours.day_end:%H:%M} Mon–Fri"

    if caller is None:
        why = "unknown caller (not a registered resident)"
        return RouteDecision(service, tuple(_desk_targets(desk, None, why, today)), why)

    if day:
        contract = next((c for c in caller.contracts if c.in_force(today)), None)
        if contract is None:
            why = f"{stamp} is day service, but {caller.name} has no contract in force"
            return RouteDecision(service, tuple(_desk_targets(desk, caller, why, today)), why)
        doctor = contract.doctor
        if doctor.has_left(today):
            why = f"{stamp} is day service, but family doctor {doctor.name} left on {doctor.left_on}"
            return RouteDecision(service, tuple(_desk_targets(desk, caller, why, today)), why)
        why = f"{stamp} is within day service ({window}) → own family doctor"
        targets = [Target(doctor, f"own family doctor of {caller.name}")]
        targets += [
            Target(a, f"assistant of {doctor.name}")
            for a in caller.assistants.get(doctor.id, ())
            if not a.has_left(today)
        ]
        return RouteDecision(service, tuple(targets), why)

    on_duty = [s for s in roster if s.district_id == caller.district_id and s.covers(at)
               and not s.doctor.has_left(today)]
    own_center = [s for s in on_duty if s.center_id == caller.center_id]
    district = [s for s in on_duty if s.center_id is None]
    if not own_center and not district:
        why = f"{stamp} is night/rest-day service, and no duty doctor is on the roster (roster gap)"
        return RouteDecision(service, tuple(_desk_targets(desk, caller, why, today)), why)
    why = f"{stamp} is outside day service ({window}) → duty doctor on the roster"
    targets = [
        Target(s.doctor, f"on duty for the center {s.starts_at.astimezone(hours.tz):%m-%d %H:%M}–"
                         f"{s.ends_at.astimezone(hours.tz):%m-%d %H:%M}")
        for s in sorted(own_center, key=lambda s: (s.starts_at, s.doctor.id))
    ]
    targets += [
        Target(s.doctor, f"on district duty {s.starts_at.astimezone(hours.tz):%m-%d %H:%M}–"
                         f"{s.ends_at.astimezone(hours.tz):%m-%d %H:%M}")
        for s in sorted(district, key=lambda s: (s.starts_at, s.doctor.id))
    ]
    return RouteDecision(service, tuple(targets), why)
