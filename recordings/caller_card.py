"""The caller's card for the screen-pop (来电弹屏): who calls, why the call came to this person,
and what is pending with them.

Given a call record and the viewer's scope (routing.scope `screen_pop`: the calls in her scope
and the calls she is rung for), the card has the resident — name, masked ID number, age, sex,
conditions, the contract in force with its doctor and team — the route reason of this call (and
why she in particular was rung), the last calls of that resident (or of that number, for an
unknown caller) with their dispositions, the open callback tasks with their voicemails, and the
night duty doctor's handover notes about the resident written in the day before the call.

The age comes from the birth date inside the encrypted ID number: decrypting it is a read of
clear personal data, so the card writes an audit row ('resident.card') in the same transaction.
The birth date itself never leaves this module (docs/privacy.md: not beside the masked number).
A call outside the scope gives None (the web layer answers 404); an unknown number gives a card
that says so, with the masked number only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from routing.numbers import InvalidNumber, parse_id_number
from routing.records import ID_NUMBER
from routing.scope import Params, Scope
from store.audit import record_read
from store.pii import PiiVault

SHANGHAI = ZoneInfo("Asia/Shanghai")
LAST_CALLS = 5
# The night's handover notes: those written this long before the call (handover/night_handover.py).
NOTES_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class CallerCard:
    record_id: int
    caller: str                       # masked number
    known: bool                       # False: an unknown caller (no resident with this number)
    offered_at: datetime
    route_reason: str
    rung_because: str | None          # why the viewer was rung (her target's reason), if she was
    resident: dict[str, Any] | None   # id, name, id_number (masked), age, sex, center, conditions
    contract: dict[str, Any] | None   # doctor_id, doctor, team_id, team, starts_on, ends_on
    last_calls: list[dict[str, Any]] = field(default_factory=list)
    open_tasks: list[dict[str, Any]] = field(default_factory=list)
    handover_notes: list[dict[str, Any]] = field(default_factory=list)   # the night's, about her

    def as_json(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        doc["offered_at"] = self.offered_at.isoformat()
        return doc


def age_on(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


_CALL = """
SELECT c.id, c.resident_id, c.caller_number_hash, c.caller_number_masked, c.offered_at,
       c.route_reason, c.route_targets
FROM call_records c WHERE c.id = $1 AND {scope}
"""

_RESIDENT = """
SELECT r.id, r.name, r.id_number_enc, r.id_number_masked, r.sex, ce.name AS center,
       ARRAY(SELECT rc.condition FROM resident_conditions rc WHERE rc.resident_id = r.id
             ORDER BY rc.condition) AS conditions,
       k.doctor_id, d.name AS doctor, k.team_id, t.name AS team, k.starts_on, k.ends_on
FROM residents r
JOIN centers ce ON ce.id = r.center_id
LEFT JOIN LATERAL (SELECT * FROM contracts k WHERE k.resident_id = r.id
                   AND $2::date BETWEEN k.starts_on AND k.ends_on ORDER BY k.starts_on DESC LIMIT 1) k ON true
LEFT JOIN staff d ON d.id = k.doctor_id
LEFT JOIN teams t ON t.id = k.team_id
WHERE r.id = $1
"""

# The caller's earlier calls (by resident, else by number), newest first, within scope.
_LAST_CALLS = """
SELECT c.id, c.offered_at, c.disposition, c.connected_at, s.name AS answered_by
FROM call_records c LEFT JOIN staff s ON s.id = c.answered_by
WHERE c.id <> $1 AND c.offered_at <= $2 AND {who} AND {scope}
ORDER BY c.offered_at DESC, c.id DESC LIMIT {limit}
"""

_TASKS = """
SELECT t.id, t.opened_at, t.due_at, s.name AS owner,
       COALESCE((SELECT json_agg(json_build_object('id', v.id, 'seconds', v.seconds,
                                                   'recorded_at', v.recorded_at) ORDER BY v.recorded_at)
                 FROM voicemails v WHERE v.task_id = t.id), '[]'::json) AS voicemails,
       (SELECT count(*) FROM callback_calls cc WHERE cc.task_id = t.id) AS missed_calls
FROM tasks t LEFT JOIN staff s ON s.id = t.owner_staff_id
WHERE t.status = 'open' AND {who} AND {scope}
ORDER BY t.due_at
"""

_NOTES = """
SELECT n.id, n.call_record_id, n.written_at, n.summary, n.follow_up, n.urgency, s.name AS author
FROM night_handover_notes n JOIN staff s ON s.id = n.author_staff_id
WHERE n.resident_id = $1 AND n.written_at > $2 AND n.written_at <= $3
ORDER BY n.written_at DESC LIMIT 10
"""


async def caller_card(pool: asyncpg.Pool, vault: PiiVault, scope: Scope, record_id: int, *,
                      now: datetime, tz: ZoneInfo = SHANGHAI) -> CallerCard | None:
    """The card of call `record_id` for the viewer of `scope`; None when out of her scope."""
    async with pool.acquire() as conn, conn.transaction():
        p = Params(record_id)
        # Constant SQL with the scope's predicate; every value is a placeholder.
        call = await conn.fetchrow(_CALL.format(scope=scope.screen_pop(p, "c")), *p.values)
        if call is None:
            return None
        me = scope.viewer.staff_id
        targets = json.loads(call["route_targets"]) if call["route_targets"] else []
        rung_because = next((t.get("reason") for t in targets
                             if isinstance(t, dict) and t.get("staff_id") == me), None)
        today = now.astimezone(tz).date()
        resident = contract = None
        if call["resident_id"] is not None:
            row = await conn.fetchrow(_RESIDENT, call["resident_id"], today)
            if row is not None:
                resident, contract = _resident(vault, row, today)
                await record_read(conn, actor=scope.viewer.actor, action="resident.card",
                                  subject=f"resident:{row['id']}", reason=f"call:{record_id}")
        if call["resident_id"] is not None:
            who_calls = ("c.resident_id = {}", call["resident_id"])
            who_tasks = ("t.resident_id = {}", call["resident_id"])
        elif call["caller_number_hash"] is not None:
            who_calls = ("c.caller_number_hash = {}", call["caller_number_hash"])
            who_tasks = ("t.caller_number_hash = {}", call["caller_number_hash"])
        else:
            who_calls = who_tasks = None
        last_calls: list[dict[str, Any]] = []
        tasks: list[dict[str, Any]] = []
        notes: list[dict[str, Any]] = []
        if resident is not None:
            at = call["offered_at"]
            notes = [{"note_id": r["id"], "call_id": r["call_record_id"],
                      # in the district's zone: the card shows it as the doctor reads a clock
                      "written_at": r["written_at"].astimezone(tz).isoformat(), "summary": r["summary"],
                      "follow_up": r["follow_up"], "urgency": r["urgency"], "author": r["author"]}
                     for r in await conn.fetch(_NOTES, resident["id"], at - NOTES_WINDOW, at)]
        if who_calls is not None and who_tasks is not None:
            q = Params(record_id, call["offered_at"])
            who = who_calls[0].format(q.add(who_calls[1]))
            rows = await conn.fetch(_LAST_CALLS.format(who=who, scope=scope.calls(q, "c"), limit=LAST_CALLS),
                                    *q.values)
            last_calls = [{"record_id": r["id"], "offered_at": r["offered_at"].isoformat(),
                           "disposition": r["disposition"], "answered_by": r["answered_by"]} for r in rows]
            t = Params()
            who = who_tasks[0].format(t.add(who_tasks[1]))
            rows = await conn.fetch(_TASKS.format(who=who, scope=scope.tasks(t, "t")), *t.values)
            tasks = [{"task_id": r["id"], "opened_at": r["opened_at"].isoformat(),
                      "due_at": r["due_at"].isoformat(), "owner": r["owner"],
                      "missed_calls": r["missed_calls"],
                      "voicemails": json.loads(r["voicemails"])} for r in rows]
    return CallerCard(record_id=record_id, caller=call["caller_number_masked"], known=resident is not None,
                      offered_at=call["offered_at"], route_reason=call["route_reason"],
                      rung_because=rung_because, resident=resident, contract=contract,
                      last_calls=last_calls, open_tasks=tasks, handover_notes=notes)


def _resident(vault: PiiVault, row: Any, today: date) -> tuple[dict[str, Any], dict[str, Any] | None]:
    try:
        age: int | None = age_on(parse_id_number(vault.decrypt(ID_NUMBER, row["id_number_enc"])).birth_date, today)
    except InvalidNumber:
        age = None  # an ID number the importer took but that names no birth date
    resident = {"id": row["id"], "name": row["name"], "id_number": row["id_number_masked"], "age": age,
                "sex": row["sex"], "center": row["center"], "conditions": list(row["conditions"])}
    contract = None if row["doctor_id"] is None else {
        "doctor_id": row["doctor_id"], "doctor": row["doctor"], "team_id": row["team_id"], "team": row["team"],
        "starts_on": row["starts_on"].isoformat(), "ends_on": row["ends_on"].isoformat()}
    return resident, contract
