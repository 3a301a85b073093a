"""Route decisions per second and their latency, on the synthetic district at real size.

    .venv/bin/python -m bench.route [--residents 510000] [--seed 1] [--concurrency 8]

The database is HOTLINE_BENCH_DATABASE_URL when set, otherwise the database `hotline_bench` of the
private PostgreSQL in the data dir (started if needed, left running for the next run). The
schema is migrated and the synthetic district 合成区<seed> seeded on the first run; later runs
reuse it. The bench keeps its own PII key in <data dir>/bench/pii.key: its data are synthetic.

Measured, at day instants (weekdays 08:00–17:00) and night instants (the rest), with ~10 % of
calls from numbers no resident has:
  - the pure rule, routing.rule.route, over callers and rosters already in memory;
  - the full decision: Directory.find_caller + roster_at + duty_desk + route, one call after the
    other (latency), and from N concurrent callers over a pool of N connections (throughput).
Instants lie inside the roster written at seed time, so a database seeded weeks ago still
measures rostered nights rather than roster gaps. Prints a table; asserts nothing.

The private server keeps running for the next run; `make stop` stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog

from hotline.config import Config, load_config
from hotline.logs import configure_logging
from hotline.runtime import all_migrations, ensure_database
from routing.directory import Directory
from routing.rule import Caller, ServiceHours, Shift, StaffMember, route
from routing.seed import seed_synthetic, synthetic_district_name, synthetic_phone
from store import db, embedded
from store.migrate import migrate
from store.pii import PiiVault, load_or_create_key

log = structlog.get_logger("bench.route")

BENCH_DATABASE = "hotline_bench"
UNKNOWN_SHARE = 0.10
INSTANTS_PER_SERVICE = 200
KNOWN_CALLERS_IN_MEMORY = 5_000
PURE_DECISIONS = 100_000      # per service
SEQUENTIAL_DECISIONS = 3_000  # per service
CONCURRENT_DECISIONS = 8_000  # per service
WARM_UP_DECISIONS = 200


@dataclass(frozen=True)
class Result:
    measure: str
    service: str
    latencies_ns: list[int]
    wall_s: float

    @property
    def rate(self) -> float:
        return len(self.latencies_ns) / self.wall_s

    def percentile_us(self, p: float) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1000


# --- the database ------------------------------------------------------------------------------

async def bench_database_url(config: Config) -> str:
    if url := os.environ.get("HOTLINE_BENCH_DATABASE_URL"):
        return url
    return await ensure_database(embedded.ensure_postgres(config.data_dir), BENCH_DATABASE)


async def ensure_seeded(pool: asyncpg.Pool, vault: PiiVault, config: Config, residents: int,
                        seed: int) -> float | None:
    """Seed the synthetic district unless it is there; the seconds it took, or None if it was."""
    name = synthetic_district_name(seed)
    loaded = await pool.fetchval(
        "SELECT count(r.id) FROM districts d JOIN centers c ON c.district_id = d.id"
        " JOIN residents r ON r.center_id = c.id WHERE d.name = $1", name)
    if loaded == residents:
        return None
    if loaded:
        sys.exit(f"bench: the bench database holds {name} with {loaded} residents, not {residents}; "
                 f"run with --residents {loaded}, another --seed, or drop the database")
    log.info("bench.seeding", district=name, residents=residents, note="once; later runs reuse it")
    started = time.perf_counter()
    await seed_synthetic(pool, vault, residents=residents, seed=seed,
                         today=datetime.now(config.tz).date(), tz=config.tz)
    return time.perf_counter() - started


# --- what to ask ---------------------------------------------------------------------------------

async def rostered_instants(pool: asyncpg.Pool, config: Config, seed: int,
                            rng: random.Random) -> dict[str, list[datetime]]:
    """Random instants inside the district's roster, by the service the rule gives them.

    "night" is every instant outside day service, as in routing.rule: nights and the daytime of
    Saturdays and Sundays (which the roster covers with day shifts).
    """
    first, last = await pool.fetchrow(
        "SELECT min(s.starts_at), max(s.ends_at) FROM duty_shifts s"
        " JOIN districts d ON d.id = s.district_id WHERE d.name = $1",
        synthetic_district_name(seed))
    hours = ServiceHours(config.tz, config.day_start, config.day_end)
    instants: dict[str, list[datetime]] = {"day": [], "night": []}
    span_s = int((last - first).total_seconds())
    while min(len(v) for v in instants.values()) < INSTANTS_PER_SERVICE:
        at = (first + timedelta(seconds=rng.randrange(span_s))).astimezone(config.tz)
        service = "day" if hours.is_day_service(at) else "night"
        if len(instants[service]) < INSTANTS_PER_SERVICE:
            instants[service].append(at)
    return instants


def calls(rng: random.Random, seed: int, residents: int, instants: Sequence[datetime],
          n: int) -> list[tuple[str, datetime]]:
    """n (calling number, instant) pairs: known residents, and UNKNOWN_SHARE strangers."""
    def number() -> str:
        if rng.random() < UNKNOWN_SHARE:
            return f"166{rng.randrange(10**8):08d}"  # 166: a prefix synthetic_phone never gives
        return synthetic_phone(seed, rng.randrange(residents))
    return [(number(), rng.choice(instants)) for _ in range(n)]


# --- measuring -------------------------------------------------------------------------------------

def measure_pure_rule(service: str, callers: Sequence[Caller | None], instants: Sequence[datetime],
                      rosters: dict[datetime, list[Shift]], desk: Sequence[StaffMember], hours: ServiceHours,
                      rng: random.Random) -> Result:
    cases = [(rng.choice(callers), at := rng.choice(instants), rosters[at])
             for _ in range(PURE_DECISIONS)]
    latencies = []
    started = time.perf_counter()
    for caller, at, roster in cases:
        t = time.perf_counter_ns()
        route(caller, at, roster, desk, hours)
        latencies.append(time.perf_counter_ns() - t)
    return Result("pure rule, in memory", service, latencies, time.perf_counter() - started)


def full_decision(directory: Directory, hours: ServiceHours) -> Callable[[str, datetime], Awaitable[None]]:
    async def decide(number: str, at: datetime) -> None:
        caller = await directory.find_caller(number)
        roster = await directory.roster_at(at)
        desk = await directory.duty_desk()
        route(caller, at, roster, desk, hours)
    return decide


async def measure_full(measure: str, service: str, decide: Callable[[str, datetime], Awaitable[None]],
                       cases: Sequence[tuple[str, datetime]], workers: int) -> Result:
    latencies: list[int] = []
    queue = iter(cases)

    async def worker() -> None:
        for number, at in queue:  # one shared iterator: each case is taken by one worker
            t = time.perf_counter_ns()
            await decide(number, at)
            latencies.append(time.perf_counter_ns() - t)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return Result(measure, service, latencies, time.perf_counter() - started)


def print_table(results: Sequence[Result], header: Sequence[str]) -> None:
    for line in header:
        print(line)
    print()
    print(f"{'measure':<40} {'service':<7} {'decisions':>9} {'decisions/s':>12} {'p50 µs':>9} {'p99 µs':>9}")
    for r in results:
        print(f"{r.measure:<40} {r.service:<7} {len(r.latencies_ns):>9,} {r.rate:>12,.0f} "
              f"{r.percentile_us(50):>9,.1f} {r.percentile_us(99):>9,.1f}")


async def run(args: argparse.Namespace) -> None:
    config = load_config()
    configure_logging("console", "warning" if args.quiet else "info", sys.stderr)
    url = await bench_database_url(config)
    vault = PiiVault.from_base64(load_or_create_key("", config.data_dir / "bench"))
    async with db.connection(url) as conn:
        await migrate(conn, all_migrations())
    pool = await db.create_pool(url, min_size=args.concurrency, max_size=args.concurrency)
    try:
        seed_s = await ensure_seeded(pool, vault, config, args.residents, args.seed)
        directory = Directory(pool, vault)
        if await directory.find_caller(synthetic_phone(args.seed, 0)) is None:
            sys.exit("bench: resident 0 is not found: was this database seeded with another PII key?")
        hours = ServiceHours(config.tz, config.day_start, config.day_end)
        rng = random.Random(args.seed)
        instants = await rostered_instants(pool, config, args.seed, rng)

        log.info("bench.loading", what="callers and rosters into memory")
        known = [await directory.find_caller(synthetic_phone(args.seed, rng.randrange(args.residents)))
                 for _ in range(KNOWN_CALLERS_IN_MEMORY)]
        unknown = [None] * round(len(known) * UNKNOWN_SHARE / (1 - UNKNOWN_SHARE))
        callers = known + unknown
        rosters = {at: await directory.roster_at(at) for ats in instants.values() for at in ats}
        desk = await directory.duty_desk()

        decide = full_decision(directory, hours)
        results = []
        for service, ats in instants.items():
            results.append(measure_pure_rule(service, callers, ats, rosters, desk, hours, rng))
        for service, ats in instants.items():
            # connections opened and statements prepared on every pooled connection: not reported
            await measure_full("warm-up", service, decide,
                               calls(rng, args.seed, args.residents, ats, WARM_UP_DECISIONS),
                               args.concurrency)
            for measure, n, workers in (
                ("full decision, PostgreSQL, sequential", SEQUENTIAL_DECISIONS, 1),
                (f"full decision, PostgreSQL, {args.concurrency} concurrent", CONCURRENT_DECISIONS,
                 args.concurrency),
            ):
                cases = calls(rng, args.seed, args.residents, ats, n)
                results.append(await measure_full(measure, service, decide, cases, workers))
        server = await pool.fetchval("SHOW server_version")
        size = await pool.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
    finally:
        await pool.close()

    seeded = (f"seeded now in {seed_s:.1f} s ({args.residents / seed_s:,.0f} residents/s)"
              if seed_s is not None else "already seeded")
    where = "HOTLINE_BENCH_DATABASE_URL" if os.environ.get("HOTLINE_BENCH_DATABASE_URL") else "embedded"
    print_table(results, [
        "Jiayi Hotline — route benchmark (bench/route.py)",
        f"cores: {os.cpu_count()}   Python {platform.python_version()}   "
        f"PostgreSQL {server} ({where}), database {size}",
        f"residents: {args.residents:,} in {synthetic_district_name(args.seed)}, {seeded}",
        f"callers: {UNKNOWN_SHARE:.0%} unknown numbers; day = weekdays "
        f"{config.day_start:%H:%M}–{config.day_end:%H:%M}, night = all other times",
        "full decision = find_caller + roster_at + duty_desk + route",
    ])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.route", description=__doc__.split("\n")[0])
    p.add_argument("--residents", type=int, default=510_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
