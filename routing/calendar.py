"""The working-day calendar: is an instant within day service for a center, and why.

Pure (no I/O) and immutable; routing asks it once per call, so a question costs a few µs. Built
from

- the national special days of the State Council's holiday notices (国务院办公厅 部分节假日安排):
  `holiday` (a day off, including the weekend days inside a holiday block) and `workday` (调休
  上班日: a Saturday or Sunday that is a working day); ordinary weekends and weekdays are implied;
- local closures: the whole district or one center closed on a date (培训, 停电, …), with a reason;
- per-center day windows (e.g. 北塘街 07:30–17:30) over the default window (08:00–17:00);
- the time zone every rule is judged in (Asia/Shanghai).

A working day is a Monday–Friday that is not a holiday, or a make-up working day, unless the
center (or its district) is closed that day. Day service is a working day inside the center's
window, start inclusive, end exclusive. A date in a year the calendar has no data for is judged
as an ordinary week — never silently: its reason says "no calendar for 2027: treated as an
ordinary week", and `missing_years` tells callers which years to warn operators about.

The reasons are English with the Chinese names of holidays and centers, e.g.
"2026-10-01 is a public holiday (国庆节) → night service".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

HOLIDAY = "holiday"
WORKDAY = "workday"
KINDS = (HOLIDAY, WORKDAY)

DEFAULT_TZ = ZoneInfo("Asia/Shanghai")
DEFAULT_DAY_START = time(8, 0)
DEFAULT_DAY_END = time(17, 0)

WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# How a date is classified (DayInfo.kind / ServiceDay.kind).
WORKING = "working"  # an ordinary Monday–Friday
MAKEUP = "makeup"  # 调休上班日: a Saturday/Sunday that is a working day
PUBLIC_HOLIDAY = "holiday"
WEEKEND = "weekend"
CLOSED = "closed"  # a local closure of the center or its district

_CACHE_LIMIT = 4096  # (date, center, district) classifications kept per calendar


@dataclass(frozen=True, slots=True)
class SpecialDay:
    """One row of a State Council notice."""

    on: date
    kind: str  # HOLIDAY or WORKDAY
    name: str  # 国庆节, 国庆节调休上班, …
    source: str = ""  # 国办发明电〔2025〕7号, or the file it was imported from


@dataclass(frozen=True, slots=True)
class Closure:
    """A local closure: exactly one of center_id / district_id is set."""

    on: date
    reason: str
    center_id: int | None = None
    district_id: int | None = None


@dataclass(frozen=True, slots=True)
class CenterHours:
    """What the calendar knows of a center: its name, district and own window (both or neither)."""

    id: int
    name: str
    district_id: int | None = None
    day_start: time | None = None
    day_end: time | None = None


@dataclass(frozen=True, slots=True)
class DayWindow:
    start: time
    end: time
    center: str | None = None  # the center whose own window this is; None: the default window

    def __str__(self) -> str:
        return f"{self.start:%H:%M}–{self.end:%H:%M}"

    @property
    def title(self) -> str:
        """'the day window' or "北塘街's day window"."""
        return f"{self.center}'s day window" if self.center else "the day window"

    def contains(self, t: time) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True, slots=True)
class DayInfo:
    """What a date is for a center, all day long."""

    on: date
    working: bool
    kind: str  # WORKING, MAKEUP, PUBLIC_HOLIDAY, WEEKEND or CLOSED
    reason: str  # "2026-10-01 is a public holiday (国庆节)", with the no-calendar note first
    window: DayWindow  # the window that applies on this date if it is a working day
    known: bool  # False: no calendar data for the date's year (judged as an ordinary week)
    name: str | None = None  # the notice's name of a holiday or make-up day

    @property
    def summary(self) -> str:
        """The whole day in one line, e.g. "… (国庆节) → night service all day"."""
        if not self.working:
            return f"{self.reason} → night service all day"
        window = str(self.window) + (f" ({self.window.title})" if self.window.center else "")
        return f"{self.reason} → day service {window}, night service outside it"


@dataclass(frozen=True, slots=True)
class ServiceDay:
    """The answer for one instant (routing.chain.ServiceDay)."""

    day: bool  # within day service
    reason: str
    kind: str  # the date's kind (DayInfo.kind)
    window: DayWindow  # the day window that applied
    known: bool  # False: no calendar for that year


class WorkingCalendar:
    """Special days + closures + center windows, judged in `tz`. Immutable once built."""

    def __init__(
        self,
        special_days: Iterable[SpecialDay] = (),
        closures: Iterable[Closure] = (),
        centers: Iterable[CenterHours] = (),
        *,
        districts: dict[int, str] | None = None,
        tz: ZoneInfo = DEFAULT_TZ,
        day_start: time = DEFAULT_DAY_START,
        day_end: time = DEFAULT_DAY_END,
        years: Iterable[int] | None = None,
    ):
        """`districts` names districts ({id: name}) for closure reasons; `years` are the years the
        calendar has data for (default: the years of `special_days`)."""
        if not day_start < day_end:
            raise ValueError(f"day window {day_start:%H:%M}–{day_end:%H:%M}: start must be before end")
        self.tz = tz
        self.default_window = DayWindow(day_start, day_end)
        self._special: dict[date, SpecialDay] = {}
        for d in special_days:
            if d.kind not in KINDS:
                raise ValueError(f"{d.on}: unknown kind {d.kind!r} (holiday or workday)")
            if d.kind == WORKDAY and d.on.weekday() < 5:
                raise ValueError(f"{d.on}: a make-up working day must be a Saturday or Sunday")
            if d.on in self._special:
                raise ValueError(f"{d.on} is listed twice")
            self._special[d.on] = d
        self.years = frozenset(years if years is not None else {d.year for d in self._special})
        self._centers: dict[int, CenterHours] = {}
        self._windows: dict[int, DayWindow] = {}
        for c in centers:
            self._centers[c.id] = c
            if (c.day_start is None) != (c.day_end is None):
                raise ValueError(f"{c.name}: a day window needs both a start and an end")
            if c.day_start is not None and c.day_end is not None:
                if not c.day_start < c.day_end:
                    raise ValueError(f"{c.name}: day window {c.day_start:%H:%M}–{c.day_end:%H:%M}: "
                                     "start must be before end")
                self._windows[c.id] = DayWindow(c.day_start, c.day_end, c.name)
        self._districts = dict(districts or {})
        self._center_closed: dict[tuple[int, date], str] = {}
        self._district_closed: dict[tuple[int, date], str] = {}
        for cl in closures:
            if (cl.center_id is None) == (cl.district_id is None):
                raise ValueError(f"closure on {cl.on}: exactly one of center or district")
            if cl.center_id is not None:
                self._center_closed[(cl.center_id, cl.on)] = cl.reason
            else:
                assert cl.district_id is not None
                self._district_closed[(cl.district_id, cl.on)] = cl.reason
        known_districts = {c.district_id for c in self._centers.values() if c.district_id is not None}
        known_districts |= {d for d, _ in self._district_closed} | set(self._districts)
        # An unknown caller has no center; with one district there is no doubt which it is.
        self._only_district = next(iter(known_districts)) if len(known_districts) == 1 else None
        self._cache: dict[tuple[date, int | None, int | None], DayInfo] = {}

    # --- questions ---------------------------------------------------------------------------

    def day_service(self, at: datetime, center_id: int | None = None, *,
                    district_id: int | None = None) -> ServiceDay:
        """Whether `at` (aware) is within day service for the center, and why.

        `center_id` None (an unknown caller) judges by the district (`district_id`, or the only
        district the calendar knows) and the default window.
        """
        if at.tzinfo is None:
            raise ValueError("day_service() needs an aware datetime")
        local = at.astimezone(self.tz)
        info = self.day(local.date(), center_id, district_id=district_id)
        if not info.working:
            return ServiceDay(False, info.reason + " → night service", info.kind, info.window, info.known)
        w = info.window
        t = local.time()
        inside = w.start <= t < w.end
        clock = f"{local.hour:02d}:{local.minute:02d}"
        if info.kind == MAKEUP:
            if inside:
                own = f" ({w.title})" if w.center else ""
                reason = f"{info.reason} → day service {w}{own}"
            else:
                reason = f"{info.reason}, but {clock} is outside {w.title} {w} → night service"
        else:
            note = "" if info.known else _no_calendar(info.on.year)
            where = "within" if inside else "outside"
            reason = (f"{note}{info.on.isoformat()} {clock} is {where} {w.title} {w}"
                      f" → {'day' if inside else 'night'} service")
        return ServiceDay(inside, reason, info.kind, w, info.known)

    def is_working_day(self, on: date, center_id: int | None = None, *,
                       district_id: int | None = None) -> bool:
        return self.day(on, center_id, district_id=district_id).working

    def day(self, on: date, center_id: int | None = None, *, district_id: int | None = None) -> DayInfo:
        """What `on` is for the center: working or not, which kind, and why."""
        key = (on, center_id, district_id)
        info = self._cache.get(key)
        if info is None:
            info = self._classify(on, center_id, district_id)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = info
        return info

    def window(self, center_id: int | None) -> DayWindow:
        """The center's own day window, or the default one."""
        return self._windows.get(center_id, self.default_window) if center_id is not None \
            else self.default_window

    def special_day(self, on: date) -> SpecialDay | None:
        return self._special.get(on)

    def special_days(self, year: int | None = None) -> list[SpecialDay]:
        return sorted((d for d in self._special.values() if year is None or d.on.year == year),
                      key=lambda d: d.on)

    def has_year(self, year: int) -> bool:
        return year in self.years

    def missing_years(self, start: date, end: date | None = None) -> tuple[int, ...]:
        """The years from `start` to `end` (inclusive; default just `start`) with no calendar
        data, for callers to warn about (e.g. next year's notice not imported yet)."""
        last = (end or start).year
        return tuple(y for y in range(start.year, last + 1) if y not in self.years)

    # --- the rules ---------------------------------------------------------------------------

    def _classify(self, on: date, center_id: int | None, district_id: int | None) -> DayInfo:
        known = on.year in self.years
        note = "" if known else _no_calendar(on.year)
        iso = on.isoformat()
        window = self.window(center_id)
        special = self._special.get(on)
        if special is not None and special.kind == HOLIDAY:
            return DayInfo(on, False, PUBLIC_HOLIDAY, f"{note}{iso} is a public holiday ({special.name})",
                           window, known, special.name)
        center = self._centers.get(center_id) if center_id is not None else None
        if center_id is not None:
            reason = self._center_closed.get((center_id, on))
            if reason is not None:
                who = center.name if center else f"center {center_id}"
                return DayInfo(on, False, CLOSED, f"{note}{who} is closed on {iso} ({reason})", window, known)
        district = district_id if district_id is not None else (
            center.district_id if center is not None else (
                self._only_district if center_id is None else None))
        if district is not None:
            reason = self._district_closed.get((district, on))
            if reason is not None:
                who = self._districts.get(district, f"district {district}")
                return DayInfo(on, False, CLOSED,
                               f"{note}{who} (the whole district) is closed on {iso} ({reason})", window, known)
        if special is not None:  # a make-up working day
            return DayInfo(on, True, MAKEUP, f"{note}{iso} is a make-up working day ({special.name})",
                           window, known, special.name)
        weekday = on.weekday()
        if weekday >= 5:
            return DayInfo(on, False, WEEKEND, f"{note}{WEEKDAY_NAMES[weekday]} {iso} is a weekend day",
                           window, known)
        return DayInfo(on, True, WORKING, f"{note}{WEEKDAY_NAMES[weekday]} {iso} is a working day",
                       window, known)


def _no_calendar(year: int) -> str:
    return f"no calendar for {year}: treated as an ordinary week; "
