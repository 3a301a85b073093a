"""Presence round trips per second and their latency (routing.presence), and what a dead Redis costs.

    .venv/bin/python -m bench.presence [--concurrency 8] [--seconds 2] [--smoke]

Redis is HOTLINE_BENCH_REDIS_URL when set, otherwise the private Redis of the data dir (started
if needed, left running; `make stop` stops it). The bench works on staff ids from 2 000 000 000
up, which no directory hands out, and clears them afterwards: it can run next to a demo.

Measured, each for --seconds, one operation after the other (latency) and from N concurrent
callers (throughput), through `presence_client` (the service's fast-failing client):
  - states of 5 staff (one MGET: what every routing decision reads);
  - claim + release of one of 5 staff (two scripts: a ring that was not answered);
  - claim + call_started + call_ended (three scripts: a ring that was answered, to hang-up);
and against Redis that is not there (degraded mode): a refused connection (nothing listens), a
hung server (accepts, never answers; the operation's own 50 ms timeout), and an operation during
the back-off that follows (Redis not tried). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from hotline.config import load_config
from hotline.logs import configure_logging
from routing.presence import Presence, presence_client
from store import embedded

FIRST_ID = 2_000_000_000
STAFF = [FIRST_ID + n for n in range(5)]
DEAD_SAMPLES = 20
# --smoke: the same measures, tiny, so `make test` sees the bench still runs (tests/test_bench_smoke.py)
SMOKE_SECONDS = 0.1
SMOKE_DEAD_SAMPLES = 2


@dataclass(frozen=True)
class Result:
    measure: str
    workers: int
    latencies_ns: list[int]
    wall_s: float

    @property
    def rate(self) -> float:
        return len(self.latencies_ns) / self.wall_s

    def percentile_us(self, p: float) -> float:
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1000


Op = Callable[[int, int], Awaitable[object]]  # (worker, n) → one measured operation


async def measure(name: str, op: Op, workers: int, seconds: float) -> Result:
    latencies: list[int] = []
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            t = time.perf_counter_ns()
            await op(w, n)
            latencies.append(time.perf_counter_ns() - t)
            n += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return Result(name, workers, latencies, time.perf_counter() - started)


def operations(p: Presence) -> dict[str, Op]:
    async def states(_w: int, _n: int) -> object:
        return await p.states(STAFF)

    async def ring(w: int, n: int) -> object:
        staff, call = STAFF[(w + n) % len(STAFF)], f"bench-{w}-{n}"
        if await p.claim(staff, call, 30):
            await p.release(staff, call)
        return None

    async def answered(w: int, n: int) -> object:
        staff, call = STAFF[(w + n) % len(STAFF)], f"bench-{w}-{n}"
        if await p.claim(staff, call, 30):
            await p.call_started(staff, call)
            await p.call_ended(staff, call)
        return None

    return {"states of 5 staff (1 MGET)": states,
            "claim + release (2 scripts)": ring,
            "claim + call_started + call_ended (3)": answered}


async def dead_redis() -> list[Result]:
    """One operation against a refused port, a hung server, and during the back-off."""
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    hung_port = server.sockets[0].getsockname()[1]
    results = []
    try:
        for what, url in (("refused", "redis://127.0.0.1:1/0"),
                          ("hung", f"redis://127.0.0.1:{hung_port}/0")):
            latencies, skipped = [], []
            for _ in range(DEAD_SAMPLES):
                client = presence_client(url)
                p = Presence(client)
                t = time.perf_counter_ns()
                await p.claim(STAFF[0], "bench", 30)  # fails: degraded from here
                latencies.append(time.perf_counter_ns() - t)
                for _ in range(50):
                    t = time.perf_counter_ns()
                    await p.claim(STAFF[0], "bench", 30)  # back-off: Redis not tried
                    skipped.append(time.perf_counter_ns() - t)
                await client.aclose()
            results.append(Result(f"dead Redis ({what}): the failing claim", 1, latencies,
                                  sum(latencies) / 1e9))
            results.append(Result(f"dead Redis ({what}): claims in the back-off", 1, skipped,
                                  sum(skipped) / 1e9))
    finally:
        server.close()
    return results


def print_table(results: Sequence[Result], header: Sequence[str]) -> None:
    for line in header:
        print(line)
    print()
    print(f"{'measure':<44} {'workers':>7} {'ops':>9} {'ops/s':>10} {'p50 µs':>9} {'p99 µs':>9}")
    for r in results:
        print(f"{r.measure:<44} {r.workers:>7} {len(r.latencies_ns):>9,} {r.rate:>10,.0f} "
              f"{r.percentile_us(50):>9,.1f} {r.percentile_us(99):>9,.1f}")


async def run(args: argparse.Namespace) -> None:
    config = load_config()
    # the dead-Redis measures log presence.degraded on purpose: keep that off the terminal
    configure_logging("console", "error", sys.stderr)
    url = os.environ.get("HOTLINE_BENCH_REDIS_URL") or embedded.ensure_redis(config.data_dir)
    client = presence_client(url, timeout_s=1.0)
    p = Presence(client, timeout_s=1.0)
    results: list[Result] = []
    try:
        version = (await client.info("server"))["redis_version"]
        for name, op in operations(p).items():
            await measure("warm-up", op, args.concurrency, 0.2)
            for workers in (1, args.concurrency):
                results.append(await measure(name, op, workers, args.seconds))
        if p.degraded_operations:
            sys.exit(f"bench: {p.degraded_operations} operations went without Redis; figures void")
    finally:
        for staff in STAFF:
            await p.clear(staff)
        await client.aclose()
    results += await dead_redis()

    where = "HOTLINE_BENCH_REDIS_URL" if os.environ.get("HOTLINE_BENCH_REDIS_URL") else "embedded, unix socket"
    print_table(results, [
        "Jiayi Hotline — presence benchmark (bench/presence.py)",
        f"cores: {os.cpu_count()}   Python {platform.python_version()}   Redis {version} ({where})",
        f"{args.seconds:g} s per measure; dead Redis: {DEAD_SAMPLES} fresh clients each, "
        "operation timeout 50 ms, back-off 1 s",
    ])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.presence", description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--smoke", action="store_true",
                   help=f"a run of a second or two ({SMOKE_SECONDS:g} s per measure): does the bench still work?")
    args = p.parse_args(argv)
    if args.smoke:
        global DEAD_SAMPLES
        args.seconds = SMOKE_SECONDS
        DEAD_SAMPLES = SMOKE_DEAD_SAMPLES
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
