"""MQTT wire encoding shared by the agent's lean publish path and the benchmark's load
generator (no paho import here)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    """An MQTT variable byte integer (the remaining length of a packet, property lengths)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
