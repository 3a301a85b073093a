"""`hotline web`: the console alone, as a console host runs it beside the service nodes — on the
configured PostgreSQL and Redis, on the port asked (0: a free one, printed), stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys

import aiohttp

from tests.conftest import ROOT, run_cli

URL = re.compile(r"hotline: console at (http://127\.0\.0\.1:\d+/)")


async def start_console(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    """`hotline web` in a subprocess, and the URL it says it serves at."""
    assert run_cli(env, "migrate").returncode == 0
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline", "web", env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    async with asyncio.timeout(60):
        while True:
            line = (await process.stdout.readline()).decode()
            assert line, "hotline web ended before saying where it listens"
            if found := URL.search(line):
                return process, found.group(1)


async def stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        return await process.wait()


async def test_hotline_web_serves_the_console_alone_and_stops_on_sigterm(cli_env: dict[str, str],
                                                                        redis_url: str) -> None:
    env = {**cli_env, "HOTLINE_REDIS_URL": redis_url, "HOTLINE_WEB_PORT": "0"}
    process, url = await start_console(env)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "login") as page:
                assert page.status == 200 and "工号" in await page.text()
                assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
            async with http.get(url + "api/v1/me") as me:
                assert me.status == 401
        assert await stop(process) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_console_starts_without_redis_and_answers_503_until_it_is_back(
        cli_env: dict[str, str]) -> None:
    """`hotline serve` starts its console even when Redis is away (the calls must not wait for
    it); a request that needs a session then gets a clear 503, not a crash or a stack trace."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    env = {**cli_env, "HOTLINE_REDIS_URL": f"redis://127.0.0.1:{dead}/0", "HOTLINE_WEB_PORT": "0"}
    process, url = await start_console(env)
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            http.cookie_jar.update_cookies({"jy_session": "x" * 43}, aiohttp.client.URL(url))
            async with http.get(url + "api/v1/me") as me:
                assert me.status == 503
                body = await me.json()
                assert body["error"] == "unavailable" and "Traceback" not in str(body)
    finally:
        await stop(process)
