"""Every benchmark still runs: each in its --smoke mode (seconds, tiny data) as `make test` runs it.

Benchmarks assert nothing about speed, and neither does this: only that the bench completes and
prints its table. A change that breaks a bench (a field removed that its notes still read)
fails here instead of on the next person who measures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def run_bench(module: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def bench_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    # the bench's own PII key and any private server would go here, never into ./.hotline
    env.update(HOTLINE_DATA_DIR=str(tmp_path / "data"), HOTLINE_LOG_FORMAT="json", **extra)
    return env


def assert_printed_table(result: subprocess.CompletedProcess[str], title: str, header: str) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    assert title in result.stdout, result.stdout
    assert f"cores: {os.cpu_count()}" in result.stdout
    assert any(line.split() and line.split()[:len(header.split())] == header.split()
               for line in result.stdout.splitlines()), result.stdout


def test_route_bench_smoke(database_url: str, redis_url: str, tmp_path: Path) -> None:
    result = run_bench("bench.route", bench_env(tmp_path, HOTLINE_BENCH_DATABASE_URL=database_url,
                                                HOTLINE_BENCH_REDIS_URL=redis_url), timeout=60)
    assert_printed_table(result, "Jiayi Hotline — route benchmark", "measure service decisions")
    assert "full decision, sequential" in result.stdout


def test_presence_bench_smoke(redis_url: str, tmp_path: Path) -> None:
    result = run_bench("bench.presence", bench_env(tmp_path, HOTLINE_BENCH_REDIS_URL=redis_url), timeout=30)
    assert_printed_table(result, "Jiayi Hotline — presence benchmark", "measure workers ops")


def test_console_bench_smoke(database_url: str, redis_url: str, tmp_path: Path) -> None:
    result = run_bench("bench.console", bench_env(tmp_path, HOTLINE_BENCH_DATABASE_URL=database_url,
                                                  HOTLINE_BENCH_REDIS_URL=redis_url), timeout=60)
    assert_printed_table(result, "Jiayi Hotline — console benchmark", "| measure | role | impl |")
    for measure in ("search: caller number", "call detail", "desk: open tasks", "board: 10 viewers"):
        assert f"| {measure}" in result.stdout, measure
    # the console's own functions, every role's search with its keyset, and the browsers' leg
    for row in ("search: date range (1 day), page 5 (keyset) | night_doctor | console",
                "search: resident name | director | console", "figures: today | director | console",
                "report: a month per center, by day | district_admin | console",
                "caller card (screen-pop) | family_doctor | console",
                "board: 10 browsers' SSE streams (console process) | supervisor | console"):
        assert f"| {row} |" in result.stdout, row
    sse = next(line for line in result.stdout.splitlines() if "browsers' SSE streams" in line)
    assert "| 0 |" not in sse and "console CPU" in sse, sse  # events reached the browsers


@pytest.mark.sip
def test_calls_bench_smoke(database_url: str, tmp_path: Path) -> None:
    result = run_bench("bench.calls", bench_env(tmp_path, HOTLINE_BENCH_DATABASE_URL=database_url), timeout=110)
    assert_printed_table(result, "Jiayi Hotline — calls benchmark", "calls/s offered ok")
    assert "2. Simultaneous bridged, recorded calls" in result.stdout  # both tables, notes included


def test_tasks_bench_smoke(database_url: str, tmp_path: Path) -> None:
    result = run_bench("bench.tasks", bench_env(tmp_path, HOTLINE_BENCH_DATABASE_URL=database_url), timeout=120)
    assert_printed_table(result, "Jiayi Hotline — tasks benchmark", "| measure | n |")
    for measure in ("| sweep |", "| watcher sweep |", "| shift change |", "| desk |"):
        assert measure in result.stdout
