"""A minimal MQTT 5 client for the load generator only: CONNECT, SUBSCRIBE, QoS 1 PUBLISH
and PUBACK over a plain socket, with many packets per system call.

Why not `agent.mqtt.client`: a load generator has to cost far less per message than the
agent it measures, or on a 2-core machine it measures itself. paho spends tens of
microseconds of Python per packet (and three `recv` calls to read one); here a batch of
requests is one `sendall`, and one `recv` of 256 KiB is parsed in a tight loop. The systems
it measures all speak through paho: the tutorial baseline directly, the agent and the
naive-lean baseline through `agent.mqtt.client`. No TLS, no auth, no reconnect: it talks to
the benchmark's own broker on loopback.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

from agent.mqtt.codec import varint

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, DISCONNECT = 1, 2, 3, 4, 8, 9, 14

OnPublish = Callable[[str, bytes], None]


def utf8(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("!H", len(raw)) + raw


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def publish_packet(topic: bytes, mid: int, payload: bytes) -> bytes:
    """QoS 1 PUBLISH, no properties. `topic` is already length-prefixed (`utf8`)."""
    body_len = len(topic) + 3 + len(payload)
    return b"".join((b"\x32", varint(body_len), topic, mid.to_bytes(2, "big"), b"\x00", payload))


class RawMqtt:
    """One connection. `on_publish(topic, payload)` runs on the reader thread; inbound QoS 1
    messages are acknowledged in batches; PUBACKs for our publishes are counted."""

    def __init__(
        self, host: str, port: int, client_id: str, on_publish: OnPublish | None = None
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._on_publish = on_publish
        self._send_lock = threading.Lock()
        self.acked = 0
        self.received = 0
        self._connected = threading.Event()
        self._subacks = threading.Semaphore(0)
        self._closing = False
        # CONNECT: protocol 5, clean start, keepalive 0 (off), Receive Maximum 65535.
        body = utf8("MQTT") + b"\x05\x02\x00\x00" + b"\x03\x21\xff\xff" + utf8(client_id)
        self.sock.sendall(packet(CONNECT << 4, body))
        self._reader = threading.Thread(target=self._read, name="rawmqtt-read", daemon=True)
        self._reader.start()
        if not self._connected.wait(10):
            raise ConnectionError("no CONNACK from the broker")

    def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 10.0) -> None:
        body = b"\x00\x01" + b"\x00" + utf8(topic_filter) + bytes([qos])
        self.send(packet((SUBSCRIBE << 4) | 0x02, body))
        if not self._subacks.acquire(timeout=timeout):
            raise ConnectionError(f"no SUBACK for {topic_filter}")

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def close(self) -> None:
        self._closing = True
        try:
            self.send(packet(DISCONNECT << 4, b""))
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.join(2)
        self.sock.close()

    def _read(self) -> None:
        sock = self.sock
        sock.settimeout(None)
        buf = b""
        while True:
            try:
                chunk = sock.recv(262144)
            except OSError:
                return
            if not chunk:
                return
            buf = buf + chunk if buf else chunk
            acks, pos = self._parse(buf)
            buf = buf[pos:]
            if acks:
                try:
                    self.send(b"".join(acks))
                except OSError:
                    return

    def _parse(self, buf: bytes) -> tuple[list[bytes], int]:
        acks: list[bytes] = []
        pos, size = 0, len(buf)
        on_publish = self._on_publish
        while pos + 2 <= size:
            first = buf[pos]
            length, mult, i = 0, 1, pos + 1
            while True:
                if i >= size:
                    return acks, pos
                byte = buf[i]
                length += (byte & 0x7F) * mult
                mult <<= 7
                i += 1
                if not byte & 0x80:
                    break
            end = i + length
            if end > size:
                return acks, pos
            kind = first >> 4
            if kind == PUBLISH:
                qos = (first >> 1) & 3
                tlen = int.from_bytes(buf[i : i + 2], "big")
                topic = buf[i + 2 : i + 2 + tlen].decode()
                j = i + 2 + tlen
                if qos:
                    acks.append(b"\x40\x02" + buf[j : j + 2])
                    j += 2
                plen, k, mult = 0, j, 1  # properties length (varint), skipped
                while True:
                    byte = buf[k]
                    plen += (byte & 0x7F) * mult
                    mult <<= 7
                    k += 1
                    if not byte & 0x80:
                        break
                self.received += 1
                if on_publish is not None:
                    on_publish(topic, buf[k + plen : end])
            elif kind == PUBACK:
                self.acked += 1
            elif kind == CONNACK:
                if buf[i + 1] != 0:
                    raise ConnectionError(f"broker refused the connection: {buf[i + 1]:#x}")
                self._connected.set()
            elif kind == SUBACK:
                self._subacks.release()
            pos = end
        return acks, pos
