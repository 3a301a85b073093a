"""`hotline db shell`: psql on the hotline's database (the configured one, or the private server).

    hotline db shell                       # interactive
    hotline db shell -c 'SELECT count(*) FROM residents'   # anything after `shell` goes to psql

The connection is given to psql as separate options, and the password only through PGPASSWORD
in psql's environment: never on its command line, where `ps` shows it to every user.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from hotline.config import Config


class DbShellError(Exception):
    """psql cannot be started; the message says why."""


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("db", help="look inside the database")
    db = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    db.add_parser("shell", help="psql on the configured or private database; further arguments go "
                                "to psql (e.g. -c 'SELECT 1')")


def psql_command(url: str, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """psql's argv and the environment entries it needs for `url` (PGPASSWORD, PGSSLMODE…)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise DbShellError(f"the database URL is not a postgresql:// URL ({parts.scheme or 'no scheme'})")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    argv = ["psql"]
    host = unquote(parts.hostname or "") if parts.hostname else query.pop("host", "")
    query.pop("host", None)
    if host:
        argv += ["--host", host]
    port = parts.port or query.pop("port", None)
    query.pop("port", None)
    if port:
        argv += ["--port", str(port)]
    if parts.username:
        argv += ["--username", unquote(parts.username)]
    database = unquote(parts.path.lstrip("/")) or query.pop("dbname", "")
    if database:
        argv += ["--dbname", database]
    env = {}
    if parts.password:
        env["PGPASSWORD"] = unquote(parts.password)
    # libpq reads the other URL parameters from the environment as PG<NAME>
    for name in ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name"):
        if name in query:
            env["PG" + name.upper().replace("_", "")] = query[name]
    return argv + extra, env


def database_url(config: Config) -> str:
    if config.database_url:
        return config.database_url
    from hotline.runtime import EMBEDDED_DATABASE, ensure_database
    from store import embedded

    return asyncio.run(ensure_database(embedded.ensure_postgres(config.data_dir), EMBEDDED_DATABASE))


def cmd_db(config: Config, args: argparse.Namespace, extra: list[str]) -> int:
    if extra[:1] == ["--"]:
        extra = extra[1:]
    argv, env = psql_command(database_url(config), extra)
    psql = shutil.which("psql")
    if psql is None:
        raise DbShellError("psql is not installed (Debian: postgresql-client; scripts/setup.sh installs it)")
    sys.stdout.flush()
    # exec: psql takes the terminal, Ctrl-C and the exit code as if started directly
    os.execve(psql, argv, {**os.environ, **env})
    return 0  # not reached
