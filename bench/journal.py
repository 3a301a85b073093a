"""What the call journal's fsync costs: append latency (each append returns once its line is
fsynced) one caller at a time and with C concurrent callers (group commit), on the file system
of the directory given (default: a temporary directory under ./.hotline, where DATA_DIR/journal
lives by default). Prints a table; asserts nothing.

    .venv/bin/python -m bench.journal [--dir DIR] [--events 2000] [--concurrency 1,8,40]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from recordings.journal import Journal

# About the size of a dial attempt or a disposition event.
SAMPLE = {"v": 1, "kind": "dial_ended", "call_id": "1-31484@127.0.0.1", "node": "bench:5070",
          "seq": 3, "outcome": "no_answer", "at": datetime(2026, 11, 24, 2, tzinfo=UTC).isoformat()}


async def run(directory: Path, events: int, concurrency: int) -> dict[str, float]:
    journal = Journal(directory)
    latencies: list[float] = []
    per_worker = events // concurrency

    async def worker(w: int) -> None:
        for i in range(per_worker):
            t = time.perf_counter()
            await journal.append({**SAMPLE, "id": f"{w}-{i}"})
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    await journal.close()
    latencies.sort()
    return {"events": len(latencies), "per_s": len(latencies) / elapsed,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
            "events_per_fsync": journal.appended / max(journal.fsyncs, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8,40")
    args = parser.parse_args()
    base = args.dir or Path(".hotline")
    base.mkdir(parents=True, exist_ok=True)
    print(f"journal in {base.resolve()} ({args.events} events per row)")
    print(f"{'concurrent':>10} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'events/fsync':>13}")
    for c in (int(x) for x in args.concurrency.split(",")):
        scratch = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=base))
        try:
            r = asyncio.run(run(scratch, args.events, c))
        finally:
            shutil.rmtree(scratch)
        print(f"{c:>10} {r['per_s']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['events_per_fsync']:>13.1f}")


if __name__ == "__main__":
    main()
