"""`hotline db shell`: the real psql on the test database, the password never on its command line."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from hotline.cli_db import DbShellError, psql_command
from tests.conftest import run_cli


def test_psql_gets_the_connection_as_options_and_the_password_in_its_environment() -> None:
    argv, env = psql_command("postgresql://hot%40line:s%3Acret@db.example:6543/hotline?sslmode=require",
                             ["-c", "SELECT 1"])
    assert argv == ["psql", "--host", "db.example", "--port", "6543", "--username", "hot@line",
                    "--dbname", "hotline", "-c", "SELECT 1"]
    assert env == {"PGPASSWORD": "s:cret", "PGSSLMODE": "require"}
    assert not any("s:cret" in a or "cret" in a for a in argv)
    # the private server: a unix socket directory in the query, no password
    argv, env = psql_command("postgresql://postgres:@/hotline?host=/srv/data/postgres", [])
    assert argv == ["psql", "--host", "/srv/data/postgres", "--username", "postgres", "--dbname", "hotline"]
    assert env == {}
    with pytest.raises(DbShellError, match="not a postgresql:// URL"):
        psql_command("mysql://x@y/z", [])


def test_db_shell_runs_psql_on_the_configured_database(cli_env: dict[str, str], database_url: str) -> None:
    result = run_cli(cli_env, "db", "shell", "-tA", "-c", "SELECT current_database(), 6 * 7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{urlsplit(database_url).path.lstrip('/')}|42"
    # psql's own exit code comes back
    bad = run_cli(cli_env, "db", "shell", "-c", "SELECT * FROM no_such_table")
    assert bad.returncode != 0 and "no_such_table" in bad.stderr
    # a password given in the URL reaches psql through PGPASSWORD (trust ignores it here), and
    # extra words are refused for every other command
    with_password = dict(cli_env, HOTLINE_DATABASE_URL=database_url.replace("postgres:@", "postgres:secret@"))
    assert run_cli(with_password, "db", "shell", "-tA", "-c", "SELECT 1").stdout.strip() == "1"
    assert run_cli(cli_env, "residents", "list", "-c", "x").returncode == 2
