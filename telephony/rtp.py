"""G.711 payloads as they are on the wire, in and out of a pyVoIP call.

pyVoIP's audio API decodes every received packet to 8-bit linear and re-encodes what it sends,
so relaying or recording through it loses most of G.711's dynamic range, and it encodes with
μ-law even when A-law was negotiated. PayloadRTPClient keeps pyVoIP's sockets and receive loop
but sends from a queue of ready-encoded 20 ms frames on its own fixed 20 ms grid (codec silence
when idle, nothing extra while relaying another call) and keeps every received audio payload
as it arrived.

SIP is ours (telephony.sip_ua); pyVoIP is kept for its RTP client, built here from the
negotiated SDP (`for_answer`), and RtpPorts hands out the node's RTP ports.
"""

from __future__ import annotations

import collections
import secrets
import socket
import struct
import threading
import time
from typing import Any

from pyVoIP import RTP

from telephony.dtmf_inband import Detector

FRAME_BYTES = 160  # 20 ms of 8 kHz G.711
FRAME_S = 0.02
# The byte each codec encodes digital silence as.
SILENCE = {"PCMU": b"\xff" * FRAME_BYTES, "PCMA": b"\xd5" * FRAME_BYTES}
# Received frames kept for a reader that is not reading (≈ 10 s); older ones are dropped.
INBOUND_BACKLOG = 500


class PayloadRTPClient(RTP.RTPClient):
    _out: collections.deque[bytes]
    _in: collections.deque[bytes]
    _lock: threading.Lock
    # Set by the leg while a menu waits for keys: every received audio payload then also goes
    # through this in-band DTMF detector (on the receive thread). None costs one attribute read.
    inband_dtmf: Detector | None = None

    def _init_payload_queues(self) -> None:
        # pyVoIP draws SSRCs from 1000–65530: concurrent calls collide (RFC 3550 wants 32 random bits)
        self.outSSRC = secrets.randbits(32)
        self._out = collections.deque()
        self._in = collections.deque(maxlen=INBOUND_BACKLOG)
        self._lock = threading.Lock()
        # Relaying another call's audio: send only what arrived, never filler between frames.
        self.relaying = False
        # What this client sent, one frame per 20 ms tick (silence for a tick with nothing to
        # send), for the recorder: the far end heard exactly this. Off until someone taps it.
        self.tapping = False
        self._sent: collections.deque[bytes] = collections.deque(maxlen=INBOUND_BACKLOG)
        self.last_received_at = time.monotonic()  # any packet, for the dead-call watchdog
        self.bad_packets = 0

    @classmethod
    def for_answer(cls, payload_type: int, codec: str, local_ip: str, local_port: int,
                   remote_ip: str, remote_port: int, on_digit: Any, dtmf_payload_type: int | None = 101
                   ) -> PayloadRTPClient:
        """A client for a negotiated audio stream: `codec` on `payload_type`, keypad events on
        `dtmf_payload_type` (None: the far end sends none)."""
        assoc = {payload_type: RTP.PayloadType[codec]}
        if dtmf_payload_type is not None:
            assoc[dtmf_payload_type] = RTP.PayloadType.EVENT
        client = cls(assoc, local_ip, local_port, remote_ip, remote_port, RTP.TransmitType.SENDRECV,
                     dtmf=on_digit)
        client._init_payload_queues()
        return client

    def redirect(self, remote_ip: str, remote_port: int) -> None:
        """Send to a new address (a re-INVITE or UPDATE moved the far end's media)."""
        self.outIP, self.outPort = remote_ip, remote_port

    def parse_packet(self, packet: bytes) -> None:
        """pyVoIP's parse, but a packet it cannot take costs that packet only: an unknown payload
        type, a short packet or a keypad event past 15 (IndexError in pyVoIP) would otherwise
        end this call's receive thread with an exception."""
        self.last_received_at = time.monotonic()
        try:
            super().parse_packet(packet)
        except Exception:
            self.bad_packets += 1

    @property
    def codec(self) -> str:
        return str(self.preference)

    # --- outgoing ----------------------------------------------------------------------------

    def send_frames(self, encoded: bytes) -> int:
        """Queue G.711 bytes in the call's codec, as 20 ms frames; returns the frames queued."""
        frames = [encoded[i:i + FRAME_BYTES] for i in range(0, len(encoded), FRAME_BYTES)]
        if frames and len(frames[-1]) < FRAME_BYTES:
            frames[-1] += SILENCE[self.codec][: FRAME_BYTES - len(frames[-1])]
        with self._lock:
            self._out.extend(frames)
        return len(frames)

    def clear_outgoing(self) -> None:
        with self._lock:
            self._out.clear()

    def _next_frame(self) -> bytes | None:
        with self._lock:
            if self._out:
                return self._out.popleft()
        return None if self.relaying else SILENCE[self.codec]

    def trans(self) -> None:
        """Send one frame per 20 ms on a fixed grid (no drift from sleep overhead). A prompt or
        idle silence otherwise; while relaying, only the frames that arrived, so relayed audio
        reaches the far end contiguous instead of with filler wedged in by clock drift."""
        next_at = time.monotonic()
        while self.NSD:
            frame = self._next_frame()
            if self.tapping:
                self._sent.append(frame if frame is not None else SILENCE[self.codec])
            if frame is not None:
                header = struct.pack("!BBHII", 0x80, int(self.preference), self.outSequence & 0xFFFF,
                                     self.outTimestamp & 0xFFFFFFFF, self.outSSRC)
                try:
                    self.sout.sendto(header + frame, (self.outIP, self.outPort))
                except OSError:
                    pass  # the far end's port is gone; the call's BYE will follow
                self.outSequence += 1
                self.outTimestamp += FRAME_BYTES
            next_at += FRAME_S
            time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        """pyVoIP's start, but a port that cannot be bound (taken meanwhile: pyVoIP picks RTP
        ports at random from its range) does not leave the new socket open behind the OSError."""
        try:
            super().start()
        except OSError:
            sock = getattr(self, "sin", None)
            if sock is not None:
                sock.close()
            raise

    def stop(self) -> None:
        """Stop sending and receiving; harmless on a client that never started (pyVoIP's deny()
        stops the clients of a call that was never answered)."""
        self.NSD = False
        for sock in {getattr(self, "sin", None), getattr(self, "sout", None)} - {None}:
            sock.close()

    # --- incoming ----------------------------------------------------------------------------

    def parse_pcmu(self, packet: Any) -> None:
        self._in.append(packet.payload)
        if (detector := self.inband_dtmf) is not None:
            detector.feed_payload(packet.payload, "PCMU")
        super().parse_pcmu(packet)

    def parse_pcma(self, packet: Any) -> None:
        self._in.append(packet.payload)
        if (detector := self.inband_dtmf) is not None:
            detector.feed_payload(packet.payload, "PCMA")
        super().parse_pcma(packet)

    def take_sent(self) -> list[bytes]:
        """Every frame sent (or silent tick) since the last call, while `tapping`."""
        frames = []
        while self._sent:
            frames.append(self._sent.popleft())
        return frames

    def take_received(self) -> list[bytes]:
        """Every audio payload received since the last call, in arrival order."""
        frames = []
        while self._in:
            frames.append(self._in.popleft())
        return frames


class RtpPorts:
    """The RTP ports of this node: handed out one per call leg, taken back when the leg ends.

    Ports are handed out in turn rather than lowest-first, so a port just freed is not given to
    the next call at once (a late packet of the old call would land in the new one). None when
    every port is taken: the caller refuses the call (503) instead of failing it after ringing.
    """

    def __init__(self, low: int, high: int, host: str = "127.0.0.1"):
        if not 0 < low <= high < 65536:
            raise ValueError(f"bad RTP port range {low}-{high}")
        self.host = host
        self._free = collections.deque(range(low, high + 1))
        self._taken: set[int] = set()
        self._lock = threading.Lock()

    def acquire(self) -> int | None:
        """A free port of the range. Ports another program holds are skipped (and put at the
        back): the range is ours by configuration, but nothing stops another process binding
        in it, and a leg must not fail to answer for that."""
        with self._lock:
            for _ in range(len(self._free)):
                port = self._free.popleft()
                if self._bindable(port):
                    self._taken.add(port)
                    return port
                self._free.append(port)
            return None

    def _bindable(self, port: int) -> bool:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((self.host, port))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def release(self, port: int) -> None:
        with self._lock:
            if port in self._taken:
                self._taken.discard(port)
                self._free.append(port)

    @property
    def in_use(self) -> int:
        return len(self._taken)
