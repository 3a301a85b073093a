"""`hotline web`: the console alone, as a console host runs it beside the service nodes — on the
configured PostgreSQL and Redis, on the port asked (0: a free one, printed), stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys

import aiohttp

from tests.conftest import ROOT, run_cli

URL = re.compile(r"hotline: console at (http://127\.0\.0\.1:\d+/)")


async def test_hotline_web_serves_the_console_alone_and_stops_on_sigterm(cli_env: dict[str, str],
                                                                        redis_url: str) -> None:
    env = {**cli_env, "HOTLINE_REDIS_URL": redis_url, "HOTLINE_WEB_PORT": "0"}
    assert run_cli(env, "migrate").returncode == 0
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline", "web", env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        url = None
        async with asyncio.timeout(60):
            while url is None:
                line = (await process.stdout.readline()).decode()
                assert line, "hotline web ended before saying where it listens"
                if found := URL.search(line):
                    url = found.group(1)
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "login") as page:
                assert page.status == 200 and "工号" in await page.text()
                assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
            async with http.get(url + "api/v1/me") as me:
                assert me.status == 401
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
