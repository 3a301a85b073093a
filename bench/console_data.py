"""The console benchmark's data: months of calls and callbacks over the synthetic district.

bench/console.py measures the console's queries on a database shaped like a district after a
season of service: the synthetic district 合成区<seed> (routing/seed.py, as `hotline seed
synthetic` writes it, with a roster over the whole span) and, over the `days` days before the
day of generation:

- `calls` call_records, ids in the order of offered_at (a bigserial at INVITE time), more by day
  than at night; 85 % from residents (their own first number; a quarter of the residents make
  most calls), 15 % from a few thousand numbers nobody in the directory has. Dispositions ~75 %
  connected, 12 % missed, 8 % abandoned, 4 % ivr_only, 1 % failed. Each row has the columns of
  migration 0018: the line dialled (the district's line, a tenth on a center's line), district,
  the caller's center and team (the line's center, or none, for strangers), and who answered: by
  day the resident's family doctor, the team's assistant or the center's agent, at night the
  duty doctor of the center's shift in duty_shifts. Route reason, targets and a whole route
  explanation (~1 kB of jsonb, as routing.chain.ChainDecision.as_json) per call;
- dial_attempts: 1–3 per call rung (none for ivr_only), the last one answered for connected calls;
- tasks: one per missed or abandoned call, unless the caller already has a task open at
  that moment (then the call joins it, callback_calls); the resident's family doctor owns it, the
  duty desk (NULL) when there is none; ~10 % still open (every task of the last 36 hours and a
  share of older ones, overdue), the rest done (5 % cancelled) hours after they opened; a third
  of missed calls left a voicemail (voicemails rows).

Written with COPY (asyncpg copy_records_to_table) in batches, in one transaction with a marker
row (table bench_console_generated), then VACUUM ANALYZE: a generation cut short leaves nothing,
and a database with the marker is reused as it is by the next run. Encrypted numbers are the
directory's own ciphertexts (a resident's first number) or a few thousand made once: nothing is
decrypted by the queries measured, but a detail page that did would show the right number.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from routing.seed import seed_synthetic, synthetic_district_name
from store.pii import PiiVault, mask_phone

log = structlog.get_logger("bench.console_data")

DISPOSITIONS = (("connected", 75), ("missed", 12), ("abandoned", 8), ("ivr_only", 4), ("failed", 1))
RESIDENT_CALL_SHARE = 0.85
STRANGER_NUMBERS = 4_000
FREQUENT_CALLER_SHARE = 0.25  # of residents, who make …
FREQUENT_CALLS_SHARE = 0.75   # … this share of residents' calls
NIGHT_CALL_SHARE = 0.18
CENTER_LINE_SHARE = 0.10
OPEN_RECENT_HOURS = 36
OPEN_SHARE = 0.10
VOICEMAIL_SHARE = 0.35  # of missed calls
BATCH = 50_000
DAY_STARTS_H, DAY_ENDS_H = 8, 17

MARKER_TABLE = "bench_console_generated"


@dataclass(frozen=True)
class Generated:
    district_id: int
    seed: int
    residents: int
    calls: int
    tasks: int
    open_tasks: int
    voicemails: int
    dial_attempts: int
    first_at: datetime
    last_at: datetime
    seconds: float  # generation (district included when seeded by it); 0 for a reused one
    seeded_seconds: float
    reused: bool

    def describe(self) -> str:
        how = ("reused (generated before; --regenerate to write it again)" if self.reused else
               f"generated now in {self.seconds:.0f} s (district seeded in {self.seeded_seconds:.0f} s)")
        return (f"{self.calls:,} call records, {self.dial_attempts:,} dial attempts, {self.tasks:,} callback"
                f" tasks ({self.open_tasks:,} open), {self.voicemails:,} voicemails over"
                f" {self.first_at:%Y-%m-%d} … {self.last_at:%Y-%m-%d}, {self.residents:,} residents: {how}")


@dataclass(frozen=True)
class _Caller:
    resident_id: int | None
    center_id: int | None
    team_id: int | None
    doctor_id: int | None
    number_hash: bytes
    number_enc: bytes
    number_masked: str

    @property
    def key(self) -> str:
        return f"resident:{self.resident_id}" if self.resident_id else f"number:{self.number_hash.hex()}"


@dataclass
class _Task:
    id: int
    caller: _Caller
    opened_at: datetime
    due_at: datetime
    closed_at: datetime | None
    status: str


class _District:
    """What the generator needs of the seeded district, loaded once."""

    def __init__(self) -> None:
        self.id = 0
        self.centers: list[int] = []
        self.staff_uri: dict[int, str] = {}
        self.staff_name: dict[int, str] = {}
        self.assistant_of_team: dict[int, int] = {}
        self.doctor_of_team: dict[int, int] = {}
        self.agent_of_center: dict[int, int] = {}
        self.desk_agents: list[int] = []
        self.backups: list[int] = []
        # the duty doctor of a center at an instant: sorted shift starts per center
        self.shift_starts: dict[int | None, list[datetime]] = defaultdict(list)
        self.shift_rows: dict[int | None, list[tuple[datetime, datetime, int]]] = defaultdict(list)
        self.lines: list[tuple[str, int | None]] = []

    def on_duty(self, center_id: int | None, at: datetime) -> int | None:
        starts = self.shift_starts.get(center_id)
        if not starts:
            return None
        k = bisect.bisect_right(starts, at) - 1
        if k >= 0:
            s, e, doctor = self.shift_rows[center_id][k]
            if s <= at < e:
                return doctor
        return None


async def generated(pool: asyncpg.Pool, seed: int) -> Generated | None:
    """The marker of a complete generation for this seed, or None."""
    if not await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", MARKER_TABLE):
        return None
    row = await pool.fetchrow(f"SELECT * FROM {MARKER_TABLE} WHERE seed = $1", seed)  # noqa: S608 - constant name
    if row is None:
        return None
    return Generated(row["district_id"], seed, row["residents"], row["calls"], row["tasks"], row["open_tasks"],
                     row["voicemails"], row["dial_attempts"], row["first_at"], row["last_at"], 0.0, 0.0, True)


async def ensure_data(pool: asyncpg.Pool, vault: PiiVault, *, residents: int, seed: int, calls: int,
                      days: int, tz: ZoneInfo, regenerate: bool = False) -> Generated:
    """The district with its calls and callbacks: the ones generated before, or new ones."""
    before = await generated(pool, seed)
    if before and not regenerate:
        if (before.residents, before.calls) != (residents, calls):
            raise SystemExit(f"bench: the database holds seed {seed} with {before.residents:,} residents and"
                             f" {before.calls:,} calls, not {residents:,} / {calls:,}: --regenerate, or"
                             " another --seed")
        return before
    started = time.perf_counter()
    now = datetime.now(UTC)
    seeded_s = await _ensure_district(pool, vault, residents=residents, seed=seed, tz=tz,
                                      first_day=(now - timedelta(days=days + 2)).astimezone(tz).date(),
                                      roster_days=days + 10)
    await pool.execute(f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} ("  # noqa: S608 - constant name
                       " seed integer PRIMARY KEY, district_id integer NOT NULL, residents integer NOT NULL,"
                       " calls integer NOT NULL, tasks integer NOT NULL, open_tasks integer NOT NULL,"
                       " voicemails integer NOT NULL, dial_attempts integer NOT NULL,"
                       " first_at timestamptz NOT NULL, last_at timestamptz NOT NULL,"
                       " generated_at timestamptz NOT NULL DEFAULT now(), seconds double precision NOT NULL)")
    district = await _load_district(pool, seed)
    callers = await _load_callers(pool, vault, district, seed)
    rng = random.Random(seed * 7919 + calls)
    async with pool.acquire() as conn, conn.transaction():
        await _clear(conn, district.id, seed)
        counts = await _write(conn, rng, district, callers, calls=calls, days=days, now=now, tz=tz)
        seconds = time.perf_counter() - started
        await conn.execute(
            f"INSERT INTO {MARKER_TABLE} (seed, district_id, residents, calls, tasks, open_tasks, voicemails,"  # noqa: S608
            " dial_attempts, first_at, last_at, seconds) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            seed, district.id, residents, calls, counts["tasks"], counts["open_tasks"], counts["voicemails"],
            counts["dial_attempts"], counts["first_at"], counts["last_at"], seconds)
    log.info("bench.console.vacuum", note="so autovacuum does not run during the measures")
    await pool.execute("VACUUM (ANALYZE) call_records, dial_attempts, tasks, callback_calls, voicemails")
    seconds = time.perf_counter() - started
    await pool.execute(f"UPDATE {MARKER_TABLE} SET seconds = $2 WHERE seed = $1", seed, seconds)  # noqa: S608
    return Generated(district.id, seed, residents, calls, counts["tasks"], counts["open_tasks"],
                     counts["voicemails"], counts["dial_attempts"], counts["first_at"], counts["last_at"],
                     seconds, seeded_s, False)


async def _ensure_district(pool: asyncpg.Pool, vault: PiiVault, *, residents: int, seed: int, tz: ZoneInfo,
                           first_day: date, roster_days: int) -> float:
    """Seed 合成区<seed> (roster from `first_day` on) unless it is loaded; the seconds it took."""
    name = synthetic_district_name(seed)
    loaded = await pool.fetchval(
        "SELECT count(r.id) FROM districts d JOIN centers c ON c.district_id = d.id"
        " JOIN residents r ON r.center_id = c.id WHERE d.name = $1", name)
    if loaded:
        if loaded != residents:
            raise SystemExit(f"bench: {name} is loaded with {loaded:,} residents, not {residents:,}")
        return 0.0
    started = time.perf_counter()
    log.info("bench.console.seeding", district=name, residents=residents, note="once; later runs reuse it")
    await seed_synthetic(pool, vault, residents=residents, seed=seed, today=first_day, tz=tz,
                         roster_days=roster_days)
    await pool.execute("VACUUM (ANALYZE) residents, resident_phones, contracts, resident_conditions,"
                       " staff, duty_shifts")
    return time.perf_counter() - started


async def _load_district(pool: asyncpg.Pool, seed: int) -> _District:
    d = _District()
    d.id = await pool.fetchval("SELECT id FROM districts WHERE name = $1", synthetic_district_name(seed))
    d.centers = [r["id"] for r in await pool.fetch(
        "SELECT id FROM centers WHERE district_id = $1 ORDER BY id", d.id)]
    for r in await pool.fetch("SELECT id, name, role, center_id, team_id, sip_uri FROM staff"
                              " WHERE district_id = $1 ORDER BY id", d.id):
        d.staff_name[r["id"]] = r["name"]
        if r["sip_uri"]:
            d.staff_uri[r["id"]] = r["sip_uri"]
        if r["role"] == "family_doctor":
            d.doctor_of_team.setdefault(r["team_id"], r["id"])
        elif r["role"] == "assistant":
            d.assistant_of_team.setdefault(r["team_id"], r["id"])
        elif r["role"] == "agent":
            if r["center_id"] is None:
                d.desk_agents.append(r["id"])
            else:
                d.agent_of_center.setdefault(r["center_id"], r["id"])
        elif r["role"] == "night_doctor" and r["center_id"] is None:
            d.backups.append(r["id"])
    for r in await pool.fetch("SELECT center_id, starts_at, ends_at, doctor_id FROM duty_shifts"
                              " WHERE district_id = $1 AND kind = 'duty' ORDER BY center_id, starts_at", d.id):
        d.shift_rows[r["center_id"]].append((r["starts_at"], r["ends_at"], r["doctor_id"]))
        d.shift_starts[r["center_id"]].append(r["starts_at"])
    # the district's hotline number, and one of its first center's: the `line` filter has both
    district_line, center_line = f"9{seed % 100_000:05d}0", f"9{seed % 100_000:05d}1"
    await pool.execute("INSERT INTO hotline_lines (number, district_id, center_id, label) VALUES"
                       " ($1, $3, NULL, '区热线'), ($2, $3, $4, '中心专线') ON CONFLICT (number) DO NOTHING",
                       district_line, center_line, d.id, d.centers[0])
    d.lines = [(district_line, None), (center_line, d.centers[0])]
    return d


async def _load_callers(pool: asyncpg.Pool, vault: PiiVault, d: _District, seed: int) -> tuple[list[_Caller], ...]:
    """(frequent residents, other residents, strangers): residents with their first number and
    the contract in force (team, doctor), in a shuffled order."""
    rows = await pool.fetch(
        "SELECT r.id, r.center_id, k.team_id, k.doctor_id, p.phone_hash, p.phone_enc, p.phone_masked"
        " FROM residents r JOIN centers c ON c.id = r.center_id AND c.district_id = $1"
        " JOIN resident_phones p ON p.resident_id = r.id AND p.position = 0"
        " LEFT JOIN contracts k ON k.resident_id = r.id AND current_date BETWEEN k.starts_on AND k.ends_on",
        d.id)
    residents = [_Caller(r["id"], r["center_id"], r["team_id"], r["doctor_id"], r["phone_hash"],
                         r["phone_enc"], r["phone_masked"]) for r in rows]
    random.Random(seed).shuffle(residents)
    frequent = max(1, round(len(residents) * FREQUENT_CALLER_SHARE))
    strangers = []
    for i in range(STRANGER_NUMBERS):
        number = f"166{(seed * 1_000_003 + i * 7_919) % 10**8:08d}"  # 166: no synthetic resident's prefix
        strangers.append(_Caller(None, None, None, None, vault.lookup_hash("phone", number),
                                 vault.encrypt("phone", number), mask_phone(number)))
    return residents[:frequent], residents[frequent:] or residents[:frequent], strangers


def _offered_instants(rng: random.Random, n: int, first: datetime, days: int, tz: ZoneInfo) -> list[datetime]:
    """n instants over `days` days from `first` (local midnight), by day mostly, sorted."""
    local0 = first.astimezone(tz)
    out = []
    day_span = (DAY_ENDS_H - DAY_STARTS_H) * 3600
    for _ in range(n):
        d = rng.randrange(days)
        if rng.random() < NIGHT_CALL_SHARE:
            s = DAY_ENDS_H * 3600 + rng.randrange(24 * 3600 - day_span)  # 17:00 → 08:00 next day
        else:
            s = DAY_STARTS_H * 3600 + rng.randrange(day_span)
        out.append(d * 86_400 + s + rng.random())
    out.sort()
    # local wall clock → UTC with one offset per day (a zone's offset changes at most at night)
    base = local0.replace(tzinfo=None)
    offsets = [(base + timedelta(days=d, hours=12)).replace(tzinfo=tz).utcoffset() or timedelta()
               for d in range(days + 2)]
    return [(base + timedelta(seconds=s) - offsets[int(s // 86_400)]).replace(tzinfo=UTC) for s in out]


def _explanation(d: _District, service: str, reason: str, targets: Sequence[int]) -> str:
    steps = [{"step": "own_team" if service == "day" else "night_duty",
              "title": "本人家庭医生团队" if service == "day" else "夜间值班医生",
              "reason": reason, "ring_timeout_s": 20.0,
              "targets": [{"staff_id": s, "name": d.staff_name[s], "role": "", "sip_uri": d.staff_uri.get(s),
                           "reason": "签约团队成员" if service == "day" else "本中心当班", "ring_group": k}
                          for k, s in enumerate(targets)],
              "skipped": []}]
    return json.dumps({"service": service, "reason": reason,
                       "targets": [{"staff_id": s, "name": d.staff_name[s], "sip_uri": d.staff_uri.get(s),
                                    "reason": "", "step": steps[0]["step"]} for s in targets],
                       "steps": steps}, ensure_ascii=False)


CALL_COLUMNS = ("id", "call_id", "caller_number_hash", "caller_number_enc", "caller_number_masked",
                "resident_id", "offered_at", "answered_at", "connected_at", "ended_at", "route_service",
                "route_reason", "route_targets", "route_explanation", "disposition", "recording_path",
                "recording_seconds", "recording_sha256", "voicemail_offset_s", "node", "line",
                "district_id", "center_id", "team_id", "answered_by")
ATTEMPT_COLUMNS = ("call_record_id", "seq", "staff_id", "sip_uri", "started_at", "ended_at", "outcome")
TASK_COLUMNS = ("id", "kind", "caller_key", "resident_id", "caller_number_hash", "caller_number_enc",
                "caller_number_masked", "owner_staff_id", "opened_at", "due_at", "status", "closed_at",
                "close_note")
EVENT_COLUMNS = ("task_id", "version", "at", "event", "owner_to")


async def _clear(conn: asyncpg.Connection, district_id: int, seed: int) -> None:
    """What an earlier generation of this seed wrote (a regeneration)."""
    await conn.execute(f"DELETE FROM {MARKER_TABLE} WHERE seed = $1", seed)  # noqa: S608 - constant name
    calls = "SELECT id FROM call_records WHERE district_id = $1"
    await conn.execute(f"DELETE FROM voicemails WHERE call_record_id IN ({calls})", district_id)  # noqa: S608
    tasks = await conn.fetch(f"SELECT DISTINCT task_id FROM callback_calls WHERE call_record_id IN ({calls})",  # noqa: S608
                             district_id)
    await conn.execute(f"DELETE FROM callback_calls WHERE call_record_id IN ({calls})", district_id)  # noqa: S608
    # tasks are never deleted, except a benchmark's own synthetic ones (migration 0024)
    await conn.execute("SELECT set_config('hotline.purge_bench', 'yes', false)")
    await conn.execute("DELETE FROM task_events WHERE task_id = ANY($1::bigint[])", [r[0] for r in tasks])
    await conn.execute("DELETE FROM tasks WHERE id = ANY($1::bigint[])", [r[0] for r in tasks])
    await conn.execute("DELETE FROM call_records WHERE district_id = $1", district_id)


async def _write(conn: asyncpg.Connection, rng: random.Random, d: _District,
                 callers: tuple[list[_Caller], ...], *, calls: int, days: int, now: datetime,
                 tz: ZoneInfo) -> dict:
    frequent, others, strangers = callers
    first_id = await conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM call_records")
    first_task = await conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM tasks")
    local_today = now.astimezone(tz).date()
    first = datetime.combine(local_today - timedelta(days=days), datetime.min.time(), tz)
    instants = [at for at in _offered_instants(rng, calls, first, days, tz) if at < now]
    while len(instants) < calls:  # today's instants still ahead of now: move them into the past
        instants.append(now - timedelta(seconds=rng.uniform(60, 3600)))
    instants.sort()
    names, weights = zip(*DISPOSITIONS, strict=True)
    cum = list(math.fsum(weights[:k + 1]) for k in range(len(weights)))
    node = f"bench-{os.getpid()}"
    explanations: dict[tuple, tuple[str, str]] = {}  # (service, ring) → (targets, explanation)
    open_by_key: dict[str, _Task] = {}
    tasks: list[_Task] = []
    links: list[tuple[int, int]] = []
    voicemails: list[tuple] = []
    n_attempts = 0
    started = time.perf_counter()

    def batches() -> Iterator[tuple[list[tuple], list[tuple]]]:
        nonlocal n_attempts
        rows: list[tuple] = []
        attempts: list[tuple] = []
        for k, offered in enumerate(instants):
            cid = first_id + k
            r = rng.random()
            if r < RESIDENT_CALL_SHARE:
                group = frequent if rng.random() < FREQUENT_CALLS_SHARE else others
                caller = group[rng.randrange(len(group))]
            else:
                caller = strangers[rng.randrange(len(strangers))]
            line, line_center = d.lines[1] if rng.random() < CENTER_LINE_SHARE else d.lines[0]
            center = caller.center_id if caller.resident_id else line_center
            local_h = offered.astimezone(tz).hour
            service = "day" if DAY_STARTS_H <= local_h < DAY_ENDS_H else "night"
            disposition = names[bisect.bisect_left(cum, rng.random() * cum[-1])]
            # who the route rings, in order
            if service == "day":
                if caller.team_id:
                    ring = [d.doctor_of_team[caller.team_id], d.assistant_of_team[caller.team_id]]
                    reason = "工作时间：本人签约团队"
                else:
                    ring = []
                    reason = "工作时间：未识别来电，转服务台"
                agent = d.agent_of_center.get(center) if center else None
                ring.append(agent or d.desk_agents[k % len(d.desk_agents)])
            else:
                duty = d.on_duty(center, offered) if center else None
                backup = d.on_duty(None, offered) or d.backups[k % len(d.backups)]
                ring = [duty, backup] if duty else [backup]
                reason = "夜间：本中心值班医生" if duty else "夜间：区级备班"
            ekey = (service, tuple(ring))
            made = explanations.get(ekey)
            if made is None:
                made = explanations[ekey] = (json.dumps([{"staff_id": s, "sip_uri": d.staff_uri.get(s)} for s in ring]),
                                             _explanation(d, service, reason, ring))
            targets, explanation = made
            answered_at = offered + timedelta(seconds=rng.uniform(0.5, 2))
            connected_at = recording = rec_s = sha = vm = answered_by = None
            if disposition == "ivr_only":
                rung = 0
                ended = answered_at + timedelta(seconds=rng.uniform(5, 60))
            elif disposition == "failed":
                rung = 1
                ended = answered_at + timedelta(seconds=rng.uniform(8, 20))
            else:
                rung = min(len(ring), rng.choice((1, 1, 2, 2, 3)))
                if disposition == "abandoned":
                    rung = min(rung, 2)
            t = answered_at + timedelta(seconds=rng.uniform(4, 15))  # the greeting, a key pressed
            outcomes: list[tuple] = []
            for seq in range(1, rung + 1):
                staff = ring[seq - 1]
                last = seq == rung
                if disposition == "failed":
                    out, ring_s = "unreachable", 0.2
                elif disposition == "connected" and last:
                    out, ring_s = "answered", rng.uniform(3, 18)
                elif disposition == "abandoned" and last:
                    out, ring_s = "cancelled", rng.uniform(3, 18)
                else:
                    out, ring_s = rng.choice(("no_answer", "no_answer", "no_answer", "busy")), 20.0
                s_at, e_at = t, t + timedelta(seconds=ring_s)
                if out == "answered":
                    answered_by, connected_at = staff, e_at
                    e_at = e_at + timedelta(seconds=rng.uniform(40, 600))
                outcomes.append((cid, seq, staff, d.staff_uri.get(staff, "sip:unknown@invalid"), s_at, e_at, out))
                t = s_at + timedelta(seconds=ring_s)
            if disposition in ("connected", "missed", "abandoned"):
                ended = (outcomes[-1][5] if outcomes else t) + timedelta(seconds=rng.uniform(0.2, 2))
                if disposition == "missed" and rng.random() < VOICEMAIL_SHARE:
                    vm = (t - offered).total_seconds() + 3.0
                    ended = ended + timedelta(seconds=rng.uniform(8, 60))
            if disposition == "connected":
                local = offered.astimezone(tz)
                recording = f"{local:%Y/%m/%d}/bench-{cid}.wav"
                rec_s = Decimal(f"{(ended - offered).total_seconds():.3f}")
                sha = rng.getrandbits(256).to_bytes(32, "big").hex()
            rows.append((cid, f"bench-{d.id}-{cid}", caller.number_hash, caller.number_enc, caller.number_masked,
                         caller.resident_id, offered, answered_at, connected_at, ended, service, reason,
                         targets, explanation, disposition, recording, rec_s, sha, vm, node, line, d.id,
                         center, caller.team_id if caller.resident_id else None, answered_by))
            attempts.extend(outcomes)
            n_attempts += len(outcomes)
            if disposition in ("missed", "abandoned"):
                _task_for(rng, caller, cid, ended, now, first_task, open_by_key, tasks, links)
                if vm is not None:
                    task_id = links[-1][0]
                    voicemails.append((task_id, cid, f"voicemail/{offered.astimezone(tz):%Y/%m/%d}/bench-{cid}.wav",
                                       Decimal(f"{rng.uniform(4, 50):.3f}"),
                                       rng.getrandbits(256).to_bytes(32, "big").hex(), ended))
            if len(rows) >= BATCH:
                yield rows, attempts
                rows, attempts = [], []
        if rows:
            yield rows, attempts

    done = 0
    for rows, attempts in batches():
        await conn.copy_records_to_table("call_records", records=rows, columns=CALL_COLUMNS)
        await conn.copy_records_to_table("dial_attempts", records=attempts, columns=ATTEMPT_COLUMNS)
        done += len(rows)
        log.info("bench.console.calls", written=done, of=calls, seconds=round(time.perf_counter() - started, 1))
    open_now = OPEN_SHARE * len(tasks)
    task_rows = [(t.id, "callback", t.caller.key, t.caller.resident_id, t.caller.number_hash,
                  t.caller.number_enc, t.caller.number_masked,
                  t.caller.doctor_id if t.caller.resident_id else None,
                  t.opened_at, t.due_at, t.status, t.closed_at, None if t.status == "open" else "")
                 for t in tasks]
    for k in range(0, len(task_rows), BATCH):
        await conn.copy_records_to_table("tasks", records=task_rows[k:k + BATCH], columns=TASK_COLUMNS)
        # each task's history begins with its opening (checked when the transaction commits)
        await conn.copy_records_to_table(
            "task_events", records=[(r[0], 1, r[8], "opened", r[7]) for r in task_rows[k:k + BATCH]],
            columns=EVENT_COLUMNS)
    for k in range(0, len(links), BATCH):
        await conn.copy_records_to_table("callback_calls", records=links[k:k + BATCH],
                                         columns=("task_id", "call_record_id"))
    await conn.copy_records_to_table("voicemails", records=voicemails,
                                     columns=("task_id", "call_record_id", "path", "seconds", "sha256",
                                              "recorded_at"))
    await conn.execute("SELECT setval(pg_get_serial_sequence('call_records', 'id'),"
                       " (SELECT max(id) FROM call_records))")
    await conn.execute("SELECT setval(pg_get_serial_sequence('tasks', 'id'),"
                       " greatest((SELECT max(id) FROM tasks), 1))")
    log.info("bench.console.tasks", tasks=len(tasks), open=sum(t.status == "open" for t in tasks),
             target_open=round(open_now), seconds=round(time.perf_counter() - started, 1))
    return {"tasks": len(tasks), "open_tasks": sum(t.status == "open" for t in tasks),
            "voicemails": len(voicemails), "dial_attempts": n_attempts,
            "first_at": instants[0], "last_at": instants[-1]}


def _task_for(rng: random.Random, caller: _Caller, call_id: int, at: datetime, now: datetime, first_task: int,
              open_by_key: dict[str, _Task], tasks: list[_Task], links: list[tuple[int, int]]) -> None:
    """Attach the missed call to the caller's task open at `at`, or open one (and decide now
    how it ends: open still, or done / cancelled some hours later)."""
    task = open_by_key.get(caller.key)
    if task is not None and (task.closed_at is None or task.closed_at > at):
        links.append((task.id, call_id))
        return
    due = at + timedelta(hours=8)
    age_h = (now - at).total_seconds() / 3600
    # recent tasks are open; of older ones a share stays open, overdue, so ~OPEN_SHARE of all are
    if age_h < OPEN_RECENT_HOURS or rng.random() < OPEN_SHARE * 0.85:
        task = _Task(first_task + len(tasks), caller, at, due, None, "open")
    else:
        closed = at + timedelta(hours=rng.uniform(0.3, 10))
        task = _Task(first_task + len(tasks), caller, at, due, closed, "cancelled" if rng.random() < 0.05 else "done")
    open_by_key[caller.key] = task
    tasks.append(task)
    links.append((task.id, call_id))
