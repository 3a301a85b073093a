"""Write RTP audio as a pcap file that sipp's play_pcap_audio sends as a caller's voice.

sipp replays the UDP payloads of a capture (Ethernet/IPv4/UDP, as tcpdump writes) with the
capture's timing to the media address of the SDP answer. A resident "saying" a 440 Hz tone
is then a generated capture of 20 ms PCMU packets.
"""

from __future__ import annotations

import audioop
import math
import struct
from pathlib import Path


def ulaw_sine(freq: float, seconds: float, amplitude: int = 8000, rate: int = 8000) -> bytes:
    count = int(seconds * rate)
    linear = b"".join(struct.pack("<h", int(amplitude * math.sin(2 * math.pi * freq * i / rate)))
                      for i in range(count))
    return audioop.lin2ulaw(linear, 2)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(path: Path, payload: bytes, payload_type: int = 0, frame_bytes: int = 160) -> Path:
    """`payload` (G.711) as 20 ms RTP packets from 10.0.0.1:4000 to 10.0.0.2:4000 (sipp only
    uses the UDP payloads and the timestamps)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # pcap, Ethernet
    ssrc = 0x440440
    for n, start in enumerate(range(0, len(payload) - frame_bytes + 1, frame_bytes)):
        rtp = struct.pack("!BBHII", 0x80, payload_type, n & 0xFFFF, n * frame_bytes, ssrc)
        rtp += payload[start:start + frame_bytes]
        udp = struct.pack("!HHHH", 4000, 4000, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + udp
        micros = n * 20_000
        out.append(struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path
