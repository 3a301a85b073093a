"""The people routing decides about, as the directory reads them: staff, contracts, callers.

Plain values with no I/O, shared by the directory (routing.directory), the fallback chain
(routing.chain) and the call flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


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
