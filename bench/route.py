"""Route decisions per second and their latency, on the synthetic district at real size, over a year.

    .venv/bin/python -m bench.route [--residents 510000] [--seed 1] [--concurrency 8] [--profile]
    .venv/bin/python -m bench.route --smoke    # seconds: 2 000 residents, a few hundred decisions

The database is HOTLINE_BENCH_DATABASE_URL when set, otherwise the database `hotline_bench` of the
private PostgreSQL in the data dir (started if needed, left running for the next run). The
schema is migrated and the synthetic district 合成区<seed> seeded on the first run (then
VACUUMed, so autovacuum's pass over the fresh tables does not land in the measures); later runs
reuse it. The bench keeps its own PII key in <data dir>/bench/pii.key: its data are synthetic.
Redis is HOTLINE_BENCH_REDIS_URL when set, otherwise the private Redis of the data dir (database
15 of it: the service uses 0, and staff ids of the bench database are not the service's).

The year. The district has a year of roster (ROSTER_DAYS nights from the day it was seeded, plus
day shifts at weekends and on weekday public holidays) and is measured at instants across that
year. A fresh database is seeded as of today when the working-day calendar covers the next
ROSTER_DAYS days, otherwise as of the latest earlier day from which it does (2026-01-01 while
only 2025 and 2026 are published), so the year holds real public holidays and 调休 make-up days
rather than years judged as ordinary weeks. A district seeded by an earlier version with a
shorter roster is extended to the year (routing.seed.extend_synthetic_roster); the header says so.

Measured, at day instants and at night instants (random instants across the year; day or night
by the real WorkingCalendar: public holidays and make-up working days count), with ~10 % of calls
from numbers no resident has, and ~10 % of the district's staff on a call in Redis (written with
an expiry by `Presence.call_started`, cleared afterwards; only in the private Redis — a Redis
given by HOTLINE_BENCH_REDIS_URL is only read):
  - the pure chain, routing.chain.route_chain, over callers and RoutingData already in memory;
  - the full decision as a live call makes it (ivr/flow.py _Call._decide): Directory.find_caller
    (PostgreSQL) + RoutingCache.data (warm) + route_chain + Presence.states (one MGET of the
    chain's people) + route_chain with their states; one call after the other (latency, and the
    latency of each part), and from N concurrent callers over a pool of N connections (throughput);
  - a cache reload, load_routing_data: what a NOTIFY (an import, a swap, leave entered), a call
    outside the loaded roster window or the safety-net timer costs the call that finds it stale.
A live call asks for the data of now, which a running service keeps warm; the bench's instants
span a year, so it keeps one RoutingCache per stretch of instants that fits a cache's window,
loaded before the measures (reloads during the measures are counted in the header). Prints a
table; asserts nothing. --profile adds a cProfile of sequential full decisions on stderr.

The private servers keep running for the next run; `make stop` stops them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import platform
import pstats
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time

import asyncpg
import structlog

from hotline.config import Config, load_config
from hotline.logs import configure_logging
from hotline.runtime import all_migrations, ensure_database
from routing.calendar import HOLIDAY, MAKEUP, PUBLIC_HOLIDAY, WEEKEND, DayInfo, WorkingCalendar
from routing.calendar_store import calendar_loader
from routing.chain import RoutingData, route_chain
from routing.directory import Directory
from routing.people import Caller
from routing.presence import Presence, presence_client
from routing.seed import (
    SeedError,
    extend_synthetic_roster,
    seed_synthetic,
    synthetic_district_name,
    synthetic_phone,
)
from routing.snapshot import WINDOW_AFTER, WINDOW_BEFORE, RoutingCache, load_routing_data
from store import db, embedded
from store.migrate import migrate
from store.pii import PiiVault, load_or_create_key

log = structlog.get_logger("bench.route")

BENCH_DATABASE = "hotline_bench"
BENCH_REDIS_DB = 15  # of the private Redis
ROSTER_DAYS = 365
UNKNOWN_SHARE = 0.10
BUSY_SHARE = 0.10  # of the district's staff with a softphone: on a call
INSTANTS_PER_SERVICE = 200
KNOWN_CALLERS_IN_MEMORY = 5_000
PURE_DECISIONS = 100_000      # per service
SEQUENTIAL_DECISIONS = 3_000  # per service
CONCURRENT_DECISIONS = 8_000  # per service
WARM_UP_DECISIONS = 200
RELOADS = 30
PROFILED_DECISIONS = 2_000
GOAL_P99_US = 2_000.0
# --smoke: every measure of the bench, tiny, so `make test` sees it still runs
# (tests/test_bench_smoke.py). Its own district (another seed) beside the real-size one.
SMOKE_RESIDENTS = 2_000
SMOKE_SEED = 9_001
SMOKE_SIZES = {"INSTANTS_PER_SERVICE": 10, "KNOWN_CALLERS_IN_MEMORY": 100, "PURE_DECISIONS": 1_000,
               "SEQUENTIAL_DECISIONS": 50, "CONCURRENT_DECISIONS": 100, "WARM_UP_DECISIONS": 10,
               "RELOADS": 2, "PROFILED_DECISIONS": 50}
PARTS = ("find_caller (PostgreSQL)", "cache.data (warm RoutingCache)", "route_chain (draft)",
         "presence.states (Redis MGET)", "route_chain (with presence)")


@dataclass(frozen=True)
class Result:
    measure: str
    service: str
    latencies_ns: list[int]
    wall_s: float | None  # None: a part of a decision (no rate of its own)

    @property
    def rate(self) -> float | None:
        return len(self.latencies_ns) / self.wall_s if self.wall_s else None

    def percentile_us(self, p: float) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1000


# --- the database ------------------------------------------------------------------------------

async def bench_database_url(config: Config) -> str:
    if url := os.environ.get("HOTLINE_BENCH_DATABASE_URL"):
        return url
    return await ensure_database(embedded.ensure_postgres(config.data_dir), BENCH_DATABASE)


def year_start(calendar: WorkingCalendar, today: date) -> date:
    """Today if the calendar covers the next ROSTER_DAYS days; else the latest earlier day from
    which it does; today if it covers no such stretch at all."""
    for back in range(3 * 366):
        start = today - timedelta(days=back)
        if not calendar.missing_years(start, start + timedelta(days=ROSTER_DAYS - 1)):
            return start
    return today


async def vacuum(pool: asyncpg.Pool) -> None:
    """VACUUM what a bulk load wrote, now rather than when autovacuum gets to it: a minute after
    a first seeding, autovacuum's passes over the big tables land in the middle of the measures
    (and index-only scans want the visibility map set)."""
    log.info("bench.vacuum", note="after a bulk load, so autovacuum does not run during the measures")
    await pool.execute("VACUUM (ANALYZE) residents, resident_phones, contracts, resident_conditions,"
                       " staff, duty_shifts")


async def ensure_seeded(pool: asyncpg.Pool, vault: PiiVault, config: Config, calendar: WorkingCalendar,
                        residents: int, seed: int) -> tuple[date, str]:
    """Seed the synthetic district unless it is there, and give it a year of roster.

    Returns the day it was seeded as of, and what was done and how long it took (for the header).
    """
    name = synthetic_district_name(seed)
    holidays = {d.on for d in calendar.special_days() if d.kind == HOLIDAY}
    loaded = await pool.fetchval(
        "SELECT count(r.id) FROM districts d JOIN centers c ON c.district_id = d.id"
        " JOIN residents r ON r.center_id = c.id WHERE d.name = $1", name)
    started = time.perf_counter()
    if not loaded:
        as_of = year_start(calendar, datetime.now(config.tz).date())
        log.info("bench.seeding", district=name, residents=residents, as_of=str(as_of),
                 roster_days=ROSTER_DAYS, note="once; later runs reuse it")
        await seed_synthetic(pool, vault, residents=residents, seed=seed, today=as_of, tz=config.tz,
                             roster_days=ROSTER_DAYS, holidays=holidays)
        await vacuum(pool)
        took = time.perf_counter() - started
        return as_of, (f"seeded now as of {as_of} in {took:.1f} s with VACUUM ({residents / took:,.0f}"
                       f" residents/s, {ROSTER_DAYS} days of roster)")
    if loaded != residents:
        sys.exit(f"bench: the bench database holds {name} with {loaded} residents, not {residents}; "
                 f"run with --residents {loaded}, another --seed, or drop the database")
    try:
        as_of, added = await extend_synthetic_roster(pool, seed=seed, tz=config.tz,
                                                     roster_days=ROSTER_DAYS, holidays=holidays)
    except SeedError as exc:
        sys.exit(f"bench: {exc}; drop the bench database to seed it again")
    took = time.perf_counter() - started
    if added:
        log.info("bench.roster_extended", district=name, shifts=added, seconds=round(took, 2))
        return as_of, (f"seeded before as of {as_of}; roster extended now to {ROSTER_DAYS} days"
                       f" (+{added:,} shifts in {took:.2f} s)")
    return as_of, f"seeded before as of {as_of}, with {ROSTER_DAYS} days of roster"


# --- what to ask ---------------------------------------------------------------------------------

def year_instants(calendar: WorkingCalendar, as_of: date, config: Config,
                  rng: random.Random) -> dict[str, list[datetime]]:
    """Random instants in the ROSTER_DAYS days from `as_of`, by the service the calendar gives
    them (the district's default window: the synthetic centers have no windows of their own).

    In UTC, as the service's clock gives them (datetime.now(UTC)) and asyncpg gives shifts:
    aware datetimes of one tzinfo compare ~20× faster than across zones, and route_chain
    compares `at` with every shift in its window.
    """
    start = datetime.combine(as_of, clock_time(0), config.tz).astimezone(UTC)
    span_s = ROSTER_DAYS * 86_400
    instants: dict[str, list[datetime]] = {"day": [], "night": []}
    while min(len(v) for v in instants.values()) < INSTANTS_PER_SERVICE:
        at = start + timedelta(seconds=rng.randrange(span_s))
        service = "day" if calendar.day_service(at).day else "night"
        if len(instants[service]) < INSTANTS_PER_SERVICE:
            instants[service].append(at)
    return instants


def describe_instants(calendar: WorkingCalendar, instants: dict[str, list[datetime]]) -> str:
    def day(at: datetime) -> DayInfo:
        return calendar.day(at.astimezone(calendar.tz).date())

    kinds = {s: Counter(day(at).kind for at in ats) for s, ats in instants.items()}
    unknown = sum(not day(at).known for ats in instants.values() for at in ats)
    text = (f"instants: {len(instants['day'])} day ({kinds['day'][MAKEUP]} on 调休 make-up working days),"
            f" {len(instants['night'])} night ({kinds['night'][PUBLIC_HOLIDAY]} on public holidays,"
            f" {kinds['night'][WEEKEND]} at weekends)")
    return text + (f"; {unknown} in years without a calendar" if unknown else "")


def calls(rng: random.Random, seed: int, residents: int, instants: Sequence[datetime],
          n: int) -> list[tuple[str, datetime]]:
    """n (calling number, instant) pairs: known residents, and UNKNOWN_SHARE strangers."""
    def number() -> str:
        if rng.random() < UNKNOWN_SHARE:
            return f"166{rng.randrange(10**8):08d}"  # 166: a prefix synthetic_phone never gives
        return synthetic_phone(seed, rng.randrange(residents))
    return [(number(), rng.choice(instants)) for _ in range(n)]


async def warm_caches(pool: asyncpg.Pool, url: str, config: Config,
                      instants: Sequence[datetime]) -> dict[datetime, RoutingCache]:
    """A loaded RoutingCache for every instant: one per stretch of instants its window covers."""
    loader = calendar_loader(config.tz, config.day_start, config.day_end)
    caches: dict[datetime, RoutingCache] = {}
    cache: RoutingCache | None = None
    fresh_until = datetime.min.replace(tzinfo=UTC)
    for at in sorted(instants):
        if cache is None or at > fresh_until:
            cache = RoutingCache(pool, url, loader, config.step_ring_timeouts, config.tz)
            # loaded around `around`, a cache is fresh from around − WINDOW_BEFORE + 1 h (= at)
            around = at + WINDOW_BEFORE - timedelta(hours=1)
            await cache.data(around)
            fresh_until = around + WINDOW_AFTER - timedelta(hours=1)
        caches[at] = cache
    return caches


def reloads(caches: Mapping[datetime, RoutingCache]) -> int:
    return sum(c.reloads for c in {id(c): c for c in caches.values()}.values())


# --- measuring -------------------------------------------------------------------------------------

def measure_pure_chain(service: str, callers: Sequence[Caller | None], instants: Sequence[datetime],
                       datas: Mapping[datetime, RoutingData], rng: random.Random) -> Result:
    cases = [(rng.choice(callers), at := rng.choice(instants), datas[at]) for _ in range(PURE_DECISIONS)]
    latencies = []
    started = time.perf_counter()
    for caller, at, data in cases:
        t = time.perf_counter_ns()
        route_chain(caller, at, data)
        latencies.append(time.perf_counter_ns() - t)
    return Result("pure chain (route_chain, in memory)", service, latencies, time.perf_counter() - started)


Decide = Callable[[str, datetime, list[tuple[int, ...]] | None], Awaitable[None]]


def full_decision(directory: Directory, caches: Mapping[datetime, RoutingCache],
                  presence: Presence) -> Decide:
    """As ivr/flow.py _Call._decide, without writing the call record; no hotline line (the
    synthetic district has none). `parts` gets the nanoseconds of each of PARTS."""
    async def decide(number: str, at: datetime, parts: list[tuple[int, ...]] | None) -> None:
        t0 = time.perf_counter_ns()
        caller = await directory.find_caller(number)
        t1 = time.perf_counter_ns()
        data = await caches[at].data(at)
        t2 = time.perf_counter_ns()
        draft = route_chain(caller, at, data)
        t3 = time.perf_counter_ns()
        people = [t.staff.id for s in draft.steps for t in s.targets]
        states = await presence.states(people) if people else {}
        t4 = time.perf_counter_ns()
        if states:
            route_chain(caller, at, data, states)
        t5 = time.perf_counter_ns()
        if parts is not None:
            parts.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4))
    return decide


async def measure_full(measure: str, service: str, decide: Decide, cases: Sequence[tuple[str, datetime]],
                       workers: int, parts: list[tuple[int, ...]] | None = None) -> Result:
    latencies: list[int] = []
    queue = iter(cases)

    async def worker() -> None:
        for number, at in queue:  # one shared iterator: each case is taken by one worker
            t = time.perf_counter_ns()
            await decide(number, at, parts)
            latencies.append(time.perf_counter_ns() - t)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return Result(measure, service, latencies, time.perf_counter() - started)


async def measure_reload(pool: asyncpg.Pool, config: Config, instants: Sequence[datetime],
                         rng: random.Random) -> Result:
    loader = calendar_loader(config.tz, config.day_start, config.day_end)
    latencies = []
    async with pool.acquire() as conn:
        await load_routing_data(conn, instants[0], loader, config.step_ring_timeouts, config.tz)  # warm-up
        started = time.perf_counter()
        for at in rng.sample(list(instants), RELOADS):
            t = time.perf_counter_ns()
            await load_routing_data(conn, at, loader, config.step_ring_timeouts, config.tz)
            latencies.append(time.perf_counter_ns() - t)
        wall = time.perf_counter() - started
    return Result("cache reload (load_routing_data)", "any", latencies, wall)


async def mark_busy(presence: Presence, staff_ids: Sequence[int], rng: random.Random) -> list[int]:
    busy = rng.sample(list(staff_ids), round(len(staff_ids) * BUSY_SHARE))
    for staff_id in busy:
        await presence.call_started(staff_id, f"bench-route-{staff_id}", ttl_s=1800)
    return busy


async def profile(decide: Decide, cases: Sequence[tuple[str, datetime]]) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for number, at in cases:
        await decide(number, at, None)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue()


def print_table(results: Sequence[Result], header: Sequence[str], footer: Sequence[str]) -> None:
    for line in header:
        print(line)
    print()
    print(f"{'measure':<46} {'service':<7} {'decisions':>9} {'decisions/s':>12} {'p50 µs':>9} {'p99 µs':>9}")
    for r in results:
        rate = f"{r.rate:>12,.0f}" if r.rate is not None else f"{'':>12}"
        print(f"{r.measure:<46} {r.service:<7} {len(r.latencies_ns):>9,} {rate} "
              f"{r.percentile_us(50):>9,.1f} {r.percentile_us(99):>9,.1f}")
    print()
    for line in footer:
        print(line)


def goal_line(results: Sequence[Result]) -> str:
    p99s = {r.service: r.percentile_us(99) for r in results if r.measure.endswith("sequential")}
    verdicts = [f"{service} p99 {p99:,.0f} µs {'met' if p99 <= GOAL_P99_US else 'NOT met'}"
                for service, p99 in p99s.items()]
    met = all(p99 <= GOAL_P99_US for p99 in p99s.values())
    return (f"goal p99 ≤ {GOAL_P99_US / 1000:g} ms for the sequential full decision: "
            f"{'MET' if met else 'NOT MET'} ({', '.join(verdicts)})")


async def run(args: argparse.Namespace) -> None:
    run_started = time.perf_counter()
    config = load_config()
    configure_logging("console", "warning" if args.quiet else "info", sys.stderr)
    url = await bench_database_url(config)
    vault = PiiVault.from_base64(load_or_create_key("", config.data_dir / "bench"))
    async with db.connection(url) as conn:
        await migrate(conn, all_migrations())
        calendar = await calendar_loader(config.tz, config.day_start, config.day_end)(conn)
    given_redis = os.environ.get("HOTLINE_BENCH_REDIS_URL")
    redis_url = given_redis or f"{embedded.ensure_redis(config.data_dir)}?db={BENCH_REDIS_DB}"
    redis = presence_client(redis_url)  # the service's client: 50 ms per operation, no retries
    presence = Presence(redis, tz=config.tz)
    pool = await db.create_pool(url, min_size=args.concurrency, max_size=args.concurrency)
    busy: list[int] = []
    try:
        as_of, seeded = await ensure_seeded(pool, vault, config, calendar, args.residents, args.seed)
        async with pool.acquire() as conn:  # again: now with the district's centers
            calendar = await calendar_loader(config.tz, config.day_start, config.day_end)(conn)
        directory = Directory(pool, vault)
        if await directory.find_caller(synthetic_phone(args.seed, 0)) is None:
            sys.exit("bench: resident 0 is not found: was this database seeded with another PII key?")
        rng = random.Random(args.seed)
        instants = year_instants(calendar, as_of, config, rng)
        district = synthetic_district_name(args.seed)
        shifts = await pool.fetchval(
            "SELECT count(*) FROM duty_shifts s JOIN districts d ON d.id = s.district_id"
            " WHERE d.name = $1", district)
        staff = [r["id"] for r in await pool.fetch(
            "SELECT s.id FROM staff s JOIN districts d ON d.id = s.district_id"
            " WHERE d.name = $1 AND s.sip_uri IS NOT NULL ORDER BY s.id", district)]
        redis_version = (await redis.info("server"))["redis_version"]
        if not given_redis:
            busy = await mark_busy(presence, staff, rng)

        log.info("bench.loading", what="callers into memory, routing caches across the year")
        known = [await directory.find_caller(synthetic_phone(args.seed, rng.randrange(args.residents)))
                 for _ in range(KNOWN_CALLERS_IN_MEMORY)]
        unknown = [None] * round(len(known) * UNKNOWN_SHARE / (1 - UNKNOWN_SHARE))
        callers = known + unknown
        every_instant = [at for ats in instants.values() for at in ats]
        configure_logging("console", "warning", sys.stderr)  # not one routing.loaded per cache
        caches = await warm_caches(pool, url, config, every_instant)
        configure_logging("console", "warning" if args.quiet else "info", sys.stderr)
        loads = reloads(caches)
        datas = {at: await caches[at].data(at) for at in every_instant}

        results = []
        for service, ats in instants.items():
            results.append(measure_pure_chain(service, callers, ats, datas, rng))
        decide = full_decision(directory, caches, presence)
        degraded_before = presence.degraded_operations
        for service, ats in instants.items():
            # connections opened and statements prepared on every pooled connection: not reported
            await measure_full("warm-up", service, decide,
                               calls(rng, args.seed, args.residents, ats, WARM_UP_DECISIONS),
                               args.concurrency)
            parts: list[tuple[int, ...]] = []
            results.append(await measure_full(
                "full decision, sequential", service, decide,
                calls(rng, args.seed, args.residents, ats, SEQUENTIAL_DECISIONS), 1, parts))
            results.extend(Result(f"  of which {name}", service, [p[k] for p in parts], None)
                           for k, name in enumerate(PARTS))
            results.append(await measure_full(
                f"full decision, {args.concurrency} concurrent", service, decide,
                calls(rng, args.seed, args.residents, ats, CONCURRENT_DECISIONS), args.concurrency))
        stale = reloads(caches) - loads
        degraded = presence.degraded_operations - degraded_before
        results.append(await measure_reload(pool, config, every_instant, rng))
        if args.profile:
            cases = calls(rng, args.seed, args.residents, instants["night"], PROFILED_DECISIONS)
            print(f"cProfile of {PROFILED_DECISIONS} sequential full decisions at night instants:",
                  file=sys.stderr)
            print(await profile(decide, cases), file=sys.stderr)
        server = await pool.fetchval("SHOW server_version")
        size = await pool.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
    finally:
        for staff_id in busy:
            await presence.clear(staff_id)
        await pool.close()
        await redis.aclose()

    where = "HOTLINE_BENCH_DATABASE_URL" if os.environ.get("HOTLINE_BENCH_DATABASE_URL") else "embedded"
    redis_where = "HOTLINE_BENCH_REDIS_URL" if given_redis else f"embedded, db {BENCH_REDIS_DB}"
    last = as_of + timedelta(days=ROSTER_DAYS - 1)
    years = ", ".join(str(y) for y in sorted(calendar.years)) or "none"
    presence_note = (f"{len(busy)} of the district's {len(staff)} staff with a softphone on a call"
                     if not given_redis else "read only (nobody marked busy in a Redis given to the bench)")
    print_table(results, [
        "Jiayi Hotline — route benchmark (bench/route.py)",
        f"cores: {os.cpu_count()}   Python {platform.python_version()}   "
        f"PostgreSQL {server} ({where}), database {size}   Redis {redis_version} ({redis_where})",
        f"residents: {args.residents:,} in {district}, {seeded}",
        f"year: {as_of} … {last}, roster {shifts:,} shifts; calendar years {years}",
        describe_instants(calendar, instants),
        f"callers: {UNKNOWN_SHARE:.0%} unknown numbers; presence: {presence_note}",
        "full decision = find_caller (PostgreSQL) + cache.data (warm RoutingCache, "
        f"{len({id(c) for c in caches.values()})} caches across the year) + route_chain"
        " + presence.states (one Redis MGET) + route_chain with the states, as ivr/flow.py _decide",
        goal_line(results),
    ], [
        f"cache reloads during the measures: {stale}"
        + ("" if not stale else " (the figures include them)")
        + f"; presence operations without Redis: {degraded}"
        + ("" if not degraded else " (figures void: presence timed out)"),
        f"run: {time.perf_counter() - run_started:.1f} s",
    ])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.route", description=__doc__.split("\n")[0])
    p.add_argument("--residents", type=int, default=None, help="default 510000 (--smoke: 2000)")
    p.add_argument("--seed", type=int, default=None, help="default 1 (--smoke: 9001)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--profile", action="store_true",
                   help="cProfile sequential full decisions, on stderr")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--smoke", action="store_true",
                   help="a run of seconds on a small district of its own: does the bench still work?")
    args = p.parse_args(argv)
    if args.smoke:
        globals().update(SMOKE_SIZES)
    if args.residents is None:
        args.residents = SMOKE_RESIDENTS if args.smoke else 510_000
    if args.seed is None:
        args.seed = SMOKE_SEED if args.smoke else 1
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
