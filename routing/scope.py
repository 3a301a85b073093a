"""Who may see what: the one place that decides a signed-in staff member's scope.

Every query of the console that reads calls, residents, tasks or staff takes a `Scope` and puts
its predicate in the WHERE clause; no page checks scope by itself. An object outside the scope is
therefore never listed, counted, exported or found by a search, and reading it by id finds
nothing (404, not 403: its existence is not leaked). Which pages and actions a role has at all is
the capability table below (403 when the role lacks one).

The rules follow the district / center / team / resident permission model:
- district_admin: the whole district, and the admin pages;
- supervisor (质控): every call and recording of the district, read-only (every read audited);
- director: her center's calls, staff, residents and tasks;
- family_doctor, assistant, nurse: the team's residents and calls, and the calls they took;
- night_doctor: the calls of the shifts she worked (in the shift's area), her team's, the calls
  she took;
- agent (desk): the calls they took and the open callbacks of the desk (tasks nobody owns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROLES = ("family_doctor", "assistant", "nurse", "night_doctor", "agent",
         "supervisor", "director", "district_admin")
TEAM_ROLES = frozenset({"family_doctor", "assistant", "nurse"})
DISTRICT_ROLES = frozenset({"district_admin", "supervisor"})
# The roles that answer hotline calls on a softphone: they have a presence to set.
ANSWERING_ROLES = frozenset({"family_doctor", "assistant", "nurse", "night_doctor", "agent"})

# What each role may do at all. A page or route names the capability it needs; lacking it is 403.
CAPABILITIES: dict[str, frozenset[str]] = {
    "desk": frozenset(ROLES),                       # my tasks (may be empty)
    "calls": frozenset(ROLES),                      # the call list and detail, within scope
    "recordings": frozenset(ROLES),                 # play a recording of a call in scope
    "screen_pop": ANSWERING_ROLES,
    "presence": ANSWERING_ROLES,
    "tasks.call": ANSWERING_ROLES,                  # click-to-call a task in scope, on her own softphone
    "board": frozenset({"agent", "night_doctor", "supervisor", "director", "district_admin"}),
    "reports": frozenset({"supervisor", "director", "district_admin"}),
    "export": frozenset({"supervisor", "director", "district_admin"}),
    "audit": frozenset({"supervisor", "district_admin"}),
    "admin": frozenset({"district_admin"}),
    "residents": frozenset({"family_doctor", "assistant", "nurse", "night_doctor", "director",
                            "supervisor", "district_admin"}),
    "tasks": frozenset(ROLES),                      # a task's page: read, note, close (in scope)
    # reassign a task by hand, with a reason: the supervisor's one write (see READ_ONLY_WRITES)
    "tasks.reassign": frozenset({"supervisor", "director", "district_admin"}),
    "referrals": frozenset({"family_doctor", "assistant", "nurse", "night_doctor", "director",
                            "supervisor", "district_admin"}),
    "referrals.add": frozenset({"family_doctor", "night_doctor", "director", "district_admin"}),
    # the night handover: the duty doctor's notes, the sheets, the day team's 签收
    "handover": frozenset({"family_doctor", "assistant", "nurse", "night_doctor", "director",
                           "supervisor", "district_admin"}),
}
# The writes a read-only role (the supervisor) may still make, each audited by its route: a
# supervisor reassigns a task nobody works (issue 11), and changes nothing else.
READ_ONLY_WRITES = frozenset({"tasks.reassign"})


@dataclass(frozen=True)
class Viewer:
    """The signed-in staff member, as the directory has her."""

    staff_id: int
    staff_no: str
    name: str
    role: str
    district_id: int
    center_id: int | None = None
    team_id: int | None = None

    @property
    def actor(self) -> str:
        """How the audit log names her."""
        return f"staff:{self.staff_no}"


class Params:
    """Positional parameters of one query: `add` returns the $n placeholder of a value."""

    def __init__(self, *initial: Any):
        self.values: list[Any] = list(initial)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


@dataclass(frozen=True)
class CallsArm:
    """One arm of a call scope's OR. `where` is over the call alias; when `source` is given
    ("duty_shifts sh") the arm is "the calls of one of these rows": `where` names the row's alias
    too, and `source_where` picks the rows (the viewer's own shifts). A query may then walk the
    rows and, for each, the calls of that row by an index (a LATERAL join), rather than test
    every call with EXISTS."""

    where: str
    source: str | None = None
    source_where: str = "true"
    # The column this arm is equal on whose index (column, offered_at DESC, id DESC) should be
    # walked whatever the filters: the calls a person answered are few, but PostgreSQL, asked for
    # them newest first within a center, walks the center's calls instead and may read them all.
    walk: str | None = None
    # A cheap condition every call of a `source` arm meets, over the call alias and constants
    # only (PostgreSQL computes its subqueries once per query): tested before the EXISTS, it
    # spares the per-call lookup of the rows for the many calls tested that are not the arm's
    # (a person's calls searched within a duty doctor's scope: most were not during her shifts).
    necessary: str | None = None
    # For a `source` arm tested call by call, what lets the EXISTS find the call's row by an
    # index: added there only (in the walk of each row's calls it is a needless test per call).
    lookup: str | None = None

    @property
    def predicate(self) -> str:
        """The arm as a boolean expression over the call alias alone."""
        if self.source is None:
            return self.where
        lookup = f" AND {self.lookup}" if self.lookup else ""
        exists = f"EXISTS (SELECT 1 FROM {self.source} WHERE {self.source_where} AND {self.where}{lookup})"
        return exists if self.necessary is None else f"({self.necessary} AND {exists})"


class Scope:
    def __init__(self, viewer: Viewer):
        if viewer.role not in ROLES:
            raise ValueError(f"unknown role {viewer.role!r}")
        self.viewer = viewer

    def can(self, capability: str) -> bool:
        return self.viewer.role in CAPABILITIES[capability]

    @property
    def read_only(self) -> bool:
        return self.viewer.role == "supervisor"

    # -- predicates: SQL boolean expressions over the given alias, placeholders added to `p` ---

    def calls(self, p: Params, c: str = "c") -> str:
        """call_records rows (alias `c`) the viewer may see: the OR of `calls_arms`."""
        arms = self.calls_arms(p, c)
        if len(arms) == 1:
            return arms[0].predicate
        return "(" + " OR ".join(arm.predicate for arm in arms) + ")"

    def calls_arms(self, p: Params, c: str = "c") -> list[CallsArm]:
        """The viewer's call scope as the arms of an OR, each one that an index walks newest
        first by itself. A list of the newest calls in scope is fastest as the newest of each
        arm merged (recordings/call_search.py): the OR as one predicate makes PostgreSQL read all
        of a team's calls, or test every call against her shifts, before it can sort."""
        v = self.viewer
        if v.role in DISTRICT_ROLES:
            return [CallsArm(f"{c}.district_id = {p.add(v.district_id)}")]
        if v.role == "director":
            return [CallsArm(f"{c}.center_id = {p.add(v.center_id)}" if v.center_id else "false")]
        me = p.add(v.staff_id)
        took = CallsArm(f"{c}.answered_by = {me}", walk=f"{c}.answered_by")
        if v.role == "agent":
            return [took]
        team = [CallsArm(f"{c}.team_id = {p.add(v.team_id)}")] if v.team_id else []
        if v.role in TEAM_ROLES:
            return [*team, took]
        # night_doctor: also every call offered during one of her shifts, in the shift's area: a
        # district-wide shift's calls by the district's index, a center's shift's by the center's.
        during = f"{c}.offered_at >= sh.starts_at AND {c}.offered_at < sh.ends_at"

        def shifts(where: str, source_where: str) -> CallsArm:
            # during one of these shifts at all: her shifts' ranges, merged once per query (none:
            # the empty multirange, false, not NULL, which would still ask the EXISTS)
            necessary = (f"{c}.offered_at <@ (SELECT coalesce(range_agg(tstzrange(sh.starts_at, sh.ends_at)),"
                         f" '{{}}'::tstzmultirange) FROM duty_shifts sh WHERE {source_where})")
            # the shift by the (doctor, range) index of duty_shifts, not each of hers read
            lookup = f"tstzrange(sh.starts_at, sh.ends_at) @> {c}.offered_at"
            return CallsArm(f"{where} AND {during}", "duty_shifts sh", source_where, necessary=necessary,
                            lookup=lookup)
        return [*team, took,
                shifts(f"{c}.district_id = sh.district_id", f"sh.doctor_id = {me} AND sh.center_id IS NULL"),
                shifts(f"{c}.center_id = sh.center_id AND {c}.district_id = sh.district_id",
                       f"sh.doctor_id = {me} AND sh.center_id IS NOT NULL")]

    def screen_pop(self, p: Params, c: str = "c") -> str:
        """call_records rows whose caller card the viewer may open: the calls in her scope, and
        the calls her phone is being (or was) rung for — a desk agent or a doctor rung for
        another team's resident must see who calls before she answers."""
        rung = (f"EXISTS (SELECT 1 FROM dial_attempts sp WHERE sp.call_record_id = {c}.id"
                f" AND sp.staff_id = {p.add(self.viewer.staff_id)})")
        return f"({self.calls(p, c)} OR {rung})"

    def residents(self, p: Params, r: str = "r") -> str:
        """residents rows (alias `r`) whose record the viewer may open."""
        v = self.viewer
        if v.role in DISTRICT_ROLES:
            return (f"EXISTS (SELECT 1 FROM centers rce WHERE rce.id = {r}.center_id"
                    f" AND rce.district_id = {p.add(v.district_id)})")
        if v.role == "director":
            return f"{r}.center_id = {p.add(v.center_id)}" if v.center_id else "false"
        # the team's residents (contract in force today) …
        team = ("false" if not v.team_id else
                f"EXISTS (SELECT 1 FROM contracts rk WHERE rk.resident_id = {r}.id"
                f" AND rk.team_id = {p.add(v.team_id)}"
                f" AND current_date BETWEEN rk.starts_on AND rk.ends_on)")
        if v.role in TEAM_ROLES:
            return team
        # … and the callers of the calls in her scope (the duty doctor's night, the agent's calls).
        # Built only here: a placeholder added but unused leaves PostgreSQL unable to type it.
        of_calls = (f"EXISTS (SELECT 1 FROM call_records c_r WHERE c_r.resident_id = {r}.id"
                    f" AND {self.calls(p, 'c_r')})")
        return f"({team} OR {of_calls})"

    def tasks(self, p: Params, t: str = "t") -> str:
        """tasks rows (alias `t`) the viewer may see."""
        v = self.viewer
        if v.role in DISTRICT_ROLES:
            d = p.add(v.district_id)
            return (f"(EXISTS (SELECT 1 FROM staff ts WHERE ts.id = {t}.owner_staff_id"
                    f" AND ts.district_id = {d})"
                    f" OR EXISTS (SELECT 1 FROM residents tr WHERE tr.id = {t}.resident_id"
                    f" AND {self.residents(p, 'tr')})"
                    f" OR ({t}.owner_staff_id IS NULL AND {self._desk_task(t, d)}))")
        # (the staff id is added only for the roles that use it: an unused placeholder leaves
        # PostgreSQL unable to type it)
        mine = f"{t}.owner_staff_id = {p.add(v.staff_id)}"
        if v.role == "agent":  # the desk's open tasks: nobody owns them
            desk = self._desk_task(t, p.add(v.district_id))
            return f"({mine} OR ({t}.owner_staff_id IS NULL AND {t}.status = 'open' AND {desk}))"
        if v.role == "night_doctor":
            return mine
        owner_in = (f"EXISTS (SELECT 1 FROM staff ts WHERE ts.id = {t}.owner_staff_id AND "
                    "{})")
        resident_in = (f"EXISTS (SELECT 1 FROM residents tr WHERE tr.id = {t}.resident_id AND "
                       "{})")
        if v.role == "director":
            if not v.center_id:
                return mine
            ce = p.add(v.center_id)
            return (f"({mine} OR {owner_in.format(f'ts.center_id = {ce}')}"
                    f" OR {resident_in.format(f'tr.center_id = {ce}')})")
        # team roles: their own tasks, their team's, and the overdue tasks escalated to them as
        # team lead (the duty doctor's task of a team resident: handover/watcher.py)
        escalated = (f"EXISTS (SELECT 1 FROM task_escalations te WHERE te.task_id = {t}.id"
                     f" AND te.staff_id = {p.add(v.staff_id)})")
        if not v.team_id:
            return f"({mine} OR {escalated})"
        return f"({mine} OR {owner_in.format(f'ts.team_id = {p.add(v.team_id)}')} OR {escalated})"

    def referrals(self, p: Params, rf: str = "rf") -> str:
        """referrals rows (alias `rf`) the viewer may see: those she recorded, and those of the
        residents whose record she may open."""
        me = p.add(self.viewer.staff_id)
        return (f"({rf}.recorded_by = {me} OR EXISTS (SELECT 1 FROM residents rfr"
                f" WHERE rfr.id = {rf}.resident_id AND {self.residents(p, 'rfr')}))")

    def handover_sheets(self, p: Params, hs: str = "hs") -> str:
        """handover_sheets rows (alias `hs`) the viewer may read: a team's sheets to the team,
        a center's to its director, the district's to its supervisors and administrators, and to
        a duty doctor the sheets holding an item of one of her shifts."""
        v = self.viewer
        if v.role in DISTRICT_ROLES:
            return f"{hs}.district_id = {p.add(v.district_id)}"
        if v.role == "director":
            return f"{hs}.center_id = {p.add(v.center_id)}" if v.center_id else "false"
        if v.role in TEAM_ROLES:
            return f"{hs}.team_id = {p.add(v.team_id)}" if v.team_id else "false"
        if v.role == "night_doctor":
            return (f"EXISTS (SELECT 1 FROM handover_items hsi JOIN duty_shifts hss"
                    f" ON hss.id = hsi.shift_id WHERE hsi.sheet_id = {hs}.id"
                    f" AND hss.doctor_id = {p.add(v.staff_id)})")
        return "false"

    @staticmethod
    def _desk_task(t: str, district: str) -> str:
        """A task nobody owns is the duty desk's of the district its missed calls were for (the
        task has no district of its own; an unknown caller's task has no resident either)."""
        return (f"EXISTS (SELECT 1 FROM callback_calls tcc JOIN call_records tcr"
                f" ON tcr.id = tcc.call_record_id WHERE tcc.task_id = {t}.id"
                f" AND tcr.district_id = {district})")

    def staff(self, p: Params, s: str = "s") -> str:
        """staff rows (alias `s`) the viewer may list."""
        v = self.viewer
        if v.role in DISTRICT_ROLES:
            return f"{s}.district_id = {p.add(v.district_id)}"
        if v.role == "director" and v.center_id:
            return f"{s}.center_id = {p.add(v.center_id)}"
        me = f"{s}.id = {p.add(v.staff_id)}"
        if v.team_id:
            return f"({me} OR {s}.team_id = {p.add(v.team_id)})"
        return me
