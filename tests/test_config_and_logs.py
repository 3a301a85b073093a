"""Configuration sources and masking; PII never reaching logs or the database in clear."""

from __future__ import annotations

import io
import json
from datetime import date, time
from pathlib import Path

import asyncpg
import pytest
import structlog

from hotline.config import ConfigError, load_config
from hotline.logs import configure_logging
from store.pii import PiiVault
from tests.conftest import run_cli
from tests.district import build_district, id_number


def test_defaults_toml_and_environment_precedence(tmp_path: Path) -> None:
    assert load_config({}).day_start == time(8)
    toml = tmp_path / "hotline.toml"
    toml.write_text('day_start = "07:30"\ntimezone = "Asia/Shanghai"\nredis_url = "redis://127.0.0.1:6390/0"\n')
    config = load_config({"HOTLINE_CONFIG": str(toml), "HOTLINE_REDIS_URL": "redis://10.0.0.9/1"})
    assert config.day_start == time(7, 30)  # from the file
    assert config.redis_url == "redis://10.0.0.9/1"  # the environment wins over the file


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HOTLINE_DAY_START": "eight"}, "day_start from HOTLINE_DAY_START: cannot read 'eight'"),
        ({"HOTLINE_DAY_START": "18:00"}, "day_start must be earlier than day_end"),
        ({"HOTLINE_TIMEZONE": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"HOTLINE_DATABASE_URL": "mysql://x@y/z"}, "database_url: expected a postgres/postgresql URL"),
        ({"HOTLINE_CONFIG": "/nonexistent/hotline.toml"}, "does not exist"),
        ({"HOTLINE_RTP_TIMEOUT_S": "0"}, "rtp_timeout_s must be positive"),
        ({"HOTLINE_RTP_TIMEOUT_S": "nan"}, "rtp_timeout_s must be positive"),
        ({"HOTLINE_MAX_CALL_S": "inf"}, "max_call_s must be positive"),
    ],
)
def test_bad_configuration_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(env)


def test_unknown_or_broken_toml_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text('dattabase_url = "postgresql://x"\n')
    with pytest.raises(ConfigError, match="unknown setting 'dattabase_url'"):
        load_config({"HOTLINE_CONFIG": str(toml)})
    toml.write_text("day_start = \n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config({"HOTLINE_CONFIG": str(toml)})


def test_hotline_config_masks_secrets(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, HOTLINE_DATABASE_URL="postgresql://hotline:s3cret@db.example:5432/hotline",
               HOTLINE_REDIS_URL="redis://:r3dis@127.0.0.1:6379/0")
    result = run_cli(env, "config")
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout and "r3dis" not in result.stdout
    assert cli_env["HOTLINE_PII_KEY"] not in result.stdout
    assert "database_url = postgresql://hotline:********@db.example:5432/hotline" in result.stdout
    assert "pii_key = ********" in result.stdout

    bad = run_cli(dict(cli_env, HOTLINE_LOG_FORMAT="xml"), "config")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "hotline: error: log_format must be one of auto, json, console"


@pytest.fixture
def restore_logging():
    yield
    structlog.reset_defaults()  # later tests must not log into this test's private stream


def test_logs_are_json_lines_with_pii_scrubbed(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    card = id_number("19480312", "024")
    structlog.get_logger("t").info(
        f"caller 13800000001 id {card}", call_id="c-1", numbers=["02225320001", "13912345678"],
        nested={"id": card}, call_time_ms=17006352000001,
    )
    line = json.loads(stream.getvalue())
    text = stream.getvalue()
    assert card not in text and "13800000001" not in text and "13912345678" not in text
    assert line["event"] == f"caller 138****0001 id 1201*************{card[-1]}"
    assert line["numbers"][1] == "139****5678"
    assert line["call_id"] == "c-1" and line["level"] == "info"
    assert line["call_time_ms"] == 17006352000001  # long digit runs that are not PII stay intact


async def test_pii_is_never_stored_in_clear(pool: asyncpg.Pool, vault: PiiVault) -> None:
    await build_district(pool, vault, week_of=date(2026, 11, 22))
    card = id_number("19480312", "024")
    # a row's text form shows bytea as hex, so one dump covers clear text and raw bytes
    dump = ""
    for table in ("residents", "resident_phones", "staff"):
        rows = await pool.fetch(f"SELECT t::text AS row FROM {table} t")  # noqa: S608 - fixed names
        dump += "\n".join(r["row"] for r in rows)
    assert "\\x" in dump  # the ciphertexts are in it
    for secret in (card, "13800000001", "02225320001", "13900000001"):
        assert secret not in dump
        assert secret.encode().hex() not in dump
    # and the stored form decrypts back to the original
    blob = await pool.fetchval("SELECT id_number_enc FROM residents WHERE name = '张桂兰'")
    assert vault.decrypt("id_number", blob) == card
