"""G.711 payloads as they are on the wire, in and out of a pyVoIP call.

pyVoIP's audio API decodes every received packet to 8-bit linear and re-encodes what it sends,
so relaying or recording through it loses most of G.711's dynamic range, and it encodes with
μ-law even when A-law was negotiated. PayloadRTPClient keeps pyVoIP's sockets and receive loop
but sends from a queue of ready-encoded 20 ms frames on its own fixed 20 ms grid (codec silence
when idle, nothing extra while relaying another call) and keeps every received audio payload
as it arrived.

pyVoIP builds its RTPClient inside VoIPCall.__init__, so `adopt` re-classes the clients of a
fresh call before they start, rather than copying that constructor.
"""

from __future__ import annotations

import collections
import secrets
import struct
import threading
import time
from typing import Any

from pyVoIP import RTP

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
        # time.monotonic() of the last packet received (from the start: a far end that never
        # sends counts as silent since then), for the call flow's dead-call watchdog
        self.last_received_at = time.monotonic()

    @classmethod
    def for_answer(cls, payload_type: int, codec: str, local_ip: str, local_port: int,
                   remote_ip: str, remote_port: int, on_digit: Any) -> PayloadRTPClient:
        """A client for a call we placed, once the far end's SDP answer chose `codec`."""
        assoc = {payload_type: RTP.PayloadType[codec], 101: RTP.PayloadType.EVENT}
        client = cls(assoc, local_ip, local_port, remote_ip, remote_port, RTP.TransmitType.SENDRECV,
                     dtmf=on_digit)
        client._init_payload_queues()
        return client

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

    def stop(self) -> None:
        """Stop sending and receiving; harmless on a client that never started (pyVoIP's deny()
        stops the clients of a call that was never answered)."""
        self.NSD = False
        for sock in {getattr(self, "sin", None), getattr(self, "sout", None)} - {None}:
            sock.close()

    # --- incoming ----------------------------------------------------------------------------

    def parse_packet(self, packet: bytes) -> None:
        self.last_received_at = time.monotonic()  # any packet, keypad events included
        super().parse_packet(packet)

    def parse_pcmu(self, packet: Any) -> None:
        self._in.append(packet.payload)
        super().parse_pcmu(packet)

    def parse_pcma(self, packet: Any) -> None:
        self._in.append(packet.payload)
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


def adopt(call: Any) -> list[PayloadRTPClient]:
    """Make a ringing pyVoIP call's RTP clients payload clients (before answer starts them)."""
    clients = []
    for client in call.RTPClients:
        client.__class__ = PayloadRTPClient
        client._init_payload_queues()
        clients.append(client)
    return clients
