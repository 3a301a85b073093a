"""The hotline service as the SIP tests run it: in this process, on the test database, registered
at the test Kamailio, its clock set by configuration (clock_start) to the instant a test needs."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from hotline.config import load_config
from hotline.runtime import Runtime
from hotline.service import RunningService, running
from routing.seed import seed_demo
from store.pii import PiiVault
from tests.conftest import TEST_PII_KEY
from tests.promises import assert_promises_kept
from tests.sip_peers import Kamailio, free_udp_port, start_kamailio


@pytest.fixture(name="kamailio")
def fresh_kamailio(tmp_path: Path) -> Iterator[Kamailio]:
    """A Kamailio of the test's own (import this into a test module to override the session
    one): no registration left over from another test can fork an INVITE to a phone that is
    gone (Kamailio would wait 30 s for it before a final answer)."""
    proxy = start_kamailio(tmp_path / "kamailio")
    yield proxy
    proxy.stop()


def hotline_fixture(at: datetime, **options: Any) -> Any:
    """A fixture running the hotline with its clock at `at` (see hotline_at for options)."""

    @pytest.fixture
    async def running(kamailio: Kamailio, database_url: str, pool: asyncpg.Pool, vault: PiiVault,
                      tmp_path: Path, redis: object, redis_url: str) -> AsyncIterator[Hotline]:
        settings = {"redis_url": redis_url, **options}  # a test may point Redis elsewhere (dead)
        async with hotline_at(at, kamailio=kamailio, database_url=database_url, pool=pool, vault=vault,
                              pii_key=TEST_PII_KEY, data_dir=tmp_path / "data", **settings) as hotline:
            yield hotline
    return running


@dataclass
class Hotline:
    service: RunningService
    config_dir: Path
    sip_port: int

    @property
    def recordings(self) -> Path:
        return self.config_dir / "recordings"


@asynccontextmanager
async def hotline_at(clock_start: datetime, *, kamailio: Kamailio, database_url: str, pool: asyncpg.Pool,
                     vault: PiiVault, pii_key: str, data_dir: Path, ring_timeout_s: float = 4.0,
                     menu_timeout_s: float = 3.0, queue_wait_s: float = 0.0,
                     voicemail_max_s: float = 3.0, redis_url: str = "",
                     sip_password: str = "", seed: bool = True,
                     env: dict[str, str] | None = None,
                     check_promises: bool = False) -> AsyncIterator[Hotline]:
    """The demo district seeded as of `clock_start`'s date (unless the test did), and the
    service running on it; `env`: further HOTLINE_* settings. `check_promises`: once the
    scenario is over and the service stopped (every call written), `hotline promises check`
    over what it left (tests/promises.py) — skipped when the scenario itself failed."""
    if seed:
        await seed_demo(pool, vault, today=clock_start.date(), tz=clock_start.tzinfo)  # type: ignore[arg-type]
    sip_port = free_udp_port()
    config = load_config({
        "HOTLINE_DATABASE_URL": database_url, "HOTLINE_PII_KEY": pii_key,
        "HOTLINE_DATA_DIR": str(data_dir), "HOTLINE_RECORDINGS_DIR": str(data_dir / "recordings"),
        "HOTLINE_SIP_REGISTRAR": f"127.0.0.1:{kamailio.port}", "HOTLINE_SIP_PORT": str(sip_port), "HOTLINE_WEB_PORT": "0",
        "HOTLINE_RTP_PORT_LOW": str(sip_port + 1000), "HOTLINE_RTP_PORT_HIGH": str(sip_port + 1200),
        "HOTLINE_RING_TIMEOUT_S": str(ring_timeout_s), "HOTLINE_MENU_TIMEOUT_S": str(menu_timeout_s),
        "HOTLINE_CLOCK_START": clock_start.isoformat(), "HOTLINE_QUEUE_WAIT_S": str(queue_wait_s),
        "HOTLINE_QUEUE_ANNOUNCE_EVERY_S": "4", "HOTLINE_VOICEMAIL_MAX_S": str(voicemail_max_s),
        "HOTLINE_REDIS_URL": redis_url, "HOTLINE_SIP_PASSWORD": sip_password, **(env or {}),
    })
    rt = Runtime(config, database_url, vault, "test")
    async with running(rt) as service:
        assert await service.agent.wait_registered(5), "the hotline did not register at Kamailio"
        yield Hotline(service, data_dir, sip_port)
    if check_promises:
        await assert_promises_kept(pool, clock_start, now=service.clock.now())


async def calls_done(hotline: Hotline, timeout_s: float = 30) -> None:
    """Until every call flow in the service has finished (records and recordings written)."""
    for _ in range(int(timeout_s / 0.05)):
        if not hotline.service.calls:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"calls still running after {timeout_s} s: {hotline.service.calls}")


class Earpiece:
    """A UDP socket standing in for the resident's earpiece (the SDP's audio port, key rtp_port),
    read by a thread as packets come so a long call cannot overflow the socket buffer."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._packets: list[tuple[int, bytes]] = []
        self._open = True
        self._reader = threading.Thread(target=self._read, name="earpiece", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while self._open:
            try:
                packet = self.sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(packet) > 12 and packet[1] & 0x7F in (0, 8):  # audio, not telephone-event
                self._packets.append((int.from_bytes(packet[2:4], "big"), packet[12:]))

    def heard(self) -> bytes:
        """Every audio payload so far, in arrival order."""
        return b"".join(payload for _, payload in list(self._packets))

    def close(self) -> None:
        self._open = False
        self._reader.join(1)
        self.sock.close()
