"""The MQTT boundary: with agent/mqtt/drain.py, the only modules that import paho-mqtt.

One network thread owns the connection: connect, reconnect with capped exponential backoff
and full jitter, re-subscribe, keepalive. Callbacks only hand messages off. A refused
CONNACK for bad credentials is fatal (MqttAuthError), never a retry storm. Inbound QoS 1
messages are acknowledged by the application (manual ack) once their answer is delivered.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.errors import MqttAuthError, MqttError
from agent.mqtt.codec import varint
from agent.mqtt.ledger import SessionLedger
from agent.outbox import Outbox, OutMessage, Relay, SendResult

log = logging.getLogger(__name__)

# CONNACK reasons that retrying cannot fix (MQTT 5 codes; 3.1.1 codes 4 and 5 map to them).
_FATAL_CONNACK = {
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x8C: "bad authentication method",
}


@dataclass(frozen=True)
class Message:
    """An inbound message, detached from paho."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    response_topic: str | None = None
    correlation_data: bytes | None = None
    dup: bool = False  # a redelivery by the broker (QoS 1 DUP flag)
    generation: int = 0  # the connection it arrived on: acks go only to that one


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Backoff:
    """Capped exponential backoff with full jitter (AWS architecture blog's 'full jitter')."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return self._rng.uniform(self.base / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


_PUBLISH = 0x30
_PUBACK = 0x40
_DISCONNECT = 0xE0
_MAX_WRITE = 65536  # bytes of queued packets joined into one send()
_PAHO_CLOCK: Callable[[], float] = getattr(paho, "time_func", time.monotonic)


class _QuickInfo(paho.MQTTMessageInfo):
    """paho's MQTTMessageInfo without its threading.Condition (a tenth of a publish's cost).
    Used for the agent's own publishes, which never call `wait_for_publish`."""

    __slots__ = ()

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self._published = False
        self.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        self._iterpos = 0

    def _set_as_published(self) -> None:
        self._published = True

    def is_published(self) -> bool:
        return self._published

    def wait_for_publish(self, timeout: float | None = None) -> None:
        raise RuntimeError("not waitable: use the MQTT client's delivery callbacks")


_PUBACK_OK = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


class _BufferedClient(paho.Client):
    """paho's client with buffered socket reads.

    paho reads each packet with three `recv()` calls (type, length, body) and runs a
    `select()` per loop; under load most of the network thread's time went there. Here one
    `recv()` of up to 64 KiB serves many packets, and `loop_read()` keeps parsing while the
    buffer holds data (which `select()` cannot see). Plain PUBLISH and PUBACK packets are
    decoded directly. Overrides paho 2.x internals (`_sock_recv`, `loop_read`,
    `_handle_publish`, `_handle_pubackcomp`); paho is pinned below 3, and the MQTT tests
    (tests/test_agent_mqtt.py, tests/faults, tests/perf) run them against a real broker.
    """

    _rbuf = b""
    _rpos = 0
    net_thread = 0  # ident of the thread that runs the loop (set by MqttClient)

    def publish(  # type: ignore[override]
        self,
        topic: str,
        payload: bytes | None = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> paho.MQTTMessageInfo:
        """paho's publish, for the common case (QoS 0/1, no properties, connected) without
        its per-message logging, Condition and intermediate copies; the session state
        (`_out_messages`, in-flight count, mids) is kept exactly as paho keeps it, so its
        PUBACK handling and resends after a reconnect apply unchanged."""
        if qos > 1 or properties is not None or self._sock is None or type(payload) is not bytes:
            return super().publish(topic, payload, qos, retain, properties)
        topic_b = topic.encode("utf-8")
        if not topic_b or b"+" in topic_b or b"#" in topic_b or len(topic_b) > 65535:
            return super().publish(topic, payload, qos, retain, properties)  # raises
        mid = self._mid_generate()
        info = _QuickInfo(mid)
        props = b"\x00" if self._protocol == paho.MQTTv5 else b""
        remaining = 2 + len(topic_b) + (2 if qos else 0) + len(props) + len(payload)
        packet = b"".join(
            (
                bytes((_PUBLISH | (qos << 1) | int(retain),)),
                varint(remaining),
                len(topic_b).to_bytes(2, "big"),
                topic_b,
                mid.to_bytes(2, "big") if qos else b"",
                props,
                payload,
            )
        )
        if qos == 0:
            info.rc = self._packet_queue(_PUBLISH, packet, mid, 0, info)
            return info
        message = paho.MQTTMessage.__new__(paho.MQTTMessage)
        message.timestamp = _PAHO_CLOCK()
        message.dup = False
        message.mid = mid
        message._topic = topic_b
        message.payload = payload
        message.qos = qos
        message.retain = retain
        message.info = info
        message.properties = None
        with self._out_message_mutex:
            if mid in self._out_messages:
                info.rc = MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
                return info
            self._out_messages[mid] = message
            limit = self._max_inflight_messages
            if limit == 0 or self._inflight_messages < limit:
                self._inflight_messages += 1
                message.state = paho.mqtt_ms_wait_for_puback
                info.rc = self._packet_queue(_PUBLISH, packet, mid, qos, info)
            else:
                message.state = paho.mqtt_ms_queued
        return info

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        # paho's PUBACK without its per-packet logging call and struct packing
        if self._manual_ack and qos == 1:
            packet = bytes((_PUBACK, 2, mid >> 8, mid & 0xFF))
            return self._packet_queue(_PUBACK, packet, mid, 1)
        return super().ack(mid, qos)

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: paho.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        # paho writes a byte to its socket pair for every packet to wake select(); the
        # network thread's own packets (answers, acks) are written on its next turn anyway.
        self._out_packet.append(
            {
                "command": command,
                "mid": mid,
                "qos": qos,
                "pos": 0,
                "to_process": len(packet),
                "packet": packet,
                "info": info,
            }
        )
        if self._sockpairW is not None and threading.get_ident() != self.net_thread:
            with contextlib.suppress(BlockingIOError):
                self._sockpairW.send(b"0")
        self._call_socket_register_write()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _packet_write(self) -> MQTTErrorCode:
        # One send() for many small packets (paho sends each on its own). Packets that need
        # paho's bookkeeping after the write (QoS 0 PUBLISH, DISCONNECT) go through it.
        out = self._out_packet  # other threads only ever append to it
        if len(out) > 1:
            taken: list[Any] = []
            size = 0
            while out and size < _MAX_WRITE:
                head = out[0]
                kind = head["command"] & 0xF0
                if head["pos"] or kind == _DISCONNECT or (kind == _PUBLISH and not head["qos"]):
                    break
                taken.append(out.popleft())
                size += len(head["packet"])
            if len(taken) > 1:
                joined = b"".join(p["packet"] for p in taken)
                out.appendleft(
                    {
                        "command": 0,
                        "mid": 0,
                        "qos": 1,
                        "pos": 0,
                        "to_process": len(joined),
                        "packet": joined,
                        "info": None,
                    }
                )
            elif taken:
                out.appendleft(taken[0])
        return super()._packet_write()

    def reset_buffer(self) -> None:
        self._rbuf, self._rpos = b"", 0

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            buf = super()._sock_recv(65536)  # raises BlockingIOError when nothing is there
            if not buf:
                return buf
            self._rbuf, pos = buf, 0
        end = min(len(buf), pos + bufsize)
        self._rpos = end
        return buf[pos:end]

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        # The common PUBACK (success, no properties) without paho's per-packet ReasonCode
        # and Properties objects: a tenth of the network thread's time under load.
        packet = self._in_packet["packet"]
        if cmd == "PUBACK" and (len(packet) == 2 or not any(packet[2:4])) and len(packet) <= 4:
            mid = (packet[0] << 8) | packet[1]
            with self._out_message_mutex:
                if mid in self._out_messages:
                    return self._do_on_publish(mid, _PUBACK_OK, _NO_PROPERTIES)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_pubackcomp(cmd)

    # (topic, payload, qos, retain, mid, dup) for PUBLISH packets without properties
    fast_handler: Callable[[str, bytes, int, bool, int, bool], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        # Requests carry no MQTT 5 properties unless they name a response topic: decode those
        # here instead of through paho's PublishPacket, Properties and MQTTMessage objects
        # and its callback matcher (a quarter of the network thread under load).
        handler = self.fast_handler
        header = self._in_packet["command"]
        packet = self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        if handler is None or qos == 2 or len(packet) < 3:
            return super()._handle_publish()
        end = 2 + ((packet[0] << 8) | packet[1])
        mid = 0
        if qos:
            mid = (packet[end] << 8) | packet[end + 1]
            end += 2
        if self._protocol == paho.MQTTv5:
            if end >= len(packet) or packet[end] != 0:  # properties present: paho's path
                return super()._handle_publish()
            end += 1
        try:
            topic = bytes(packet[2 : 2 + ((packet[0] << 8) | packet[1])]).decode("utf-8")
        except UnicodeDecodeError:
            return super()._handle_publish()
        with self._in_callback_mutex:
            handler(topic, bytes(packet[end:]), qos, bool(header & 0x01), mid, bool(header & 0x08))
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    # called on the network thread once the packets of one socket read are handled
    after_read: Callable[[], None] | None = None

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while (
            rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            and self._sock is not None
            and self._rpos < len(self._rbuf)
        ):
            rc = super().loop_read(max_packets)
        if self.after_read is not None:
            self.after_read()
            if self._out_packet and self._sock is not None:
                # The answers just queued go out now, not after one more select() round.
                self.loop_write()
        return rc


def configure_connection(client: paho.Client, config: MqttConfig, password: str | None) -> None:
    """Credentials and TLS, the same for every connection the agent opens."""
    if config.username is not None:
        client.username_pw_set(config.username, password)
    if config.tls.enabled:
        client.tls_set(
            ca_certs=str(config.tls.ca_file) if config.tls.ca_file else None,
            certfile=str(config.tls.cert_file) if config.tls.cert_file else None,
            keyfile=str(k) if (k := config.tls.resolved_key_file()) else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        client.tls_insecure_set(not config.tls.check_hostname)


class MqttClient:
    def __init__(
        self,
        config: MqttConfig,
        client_id: str,
        *,
        will: Will | None,
        subscriptions: list[tuple[str, int]],
        on_message: Callable[[Message], None],
        on_connected: Callable[[bool], None] | None = None,
        password: str | None = None,
        manual_ack: bool = True,
        max_inflight: int = 100,
        outbox: Outbox | None = None,
        receive_maximum: int | None = None,
        on_read_done: Callable[[], None] | None = None,
        ledger: SessionLedger | None = None,
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._on_read_done = on_read_done
        self._valid_topics: set[str] = set()
        self._subscriptions = list(subscriptions)
        self._on_message = on_message
        self._on_connected = on_connected
        self._v5 = config.protocol == "5"
        self._receive_maximum = receive_maximum
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._delivered_lock = threading.Lock()
        self._delivery_callbacks: dict[int, Callable[[], None]] = {}
        self._early_deliveries: set[int] = set()
        self._backoff = Backoff(config.reconnect.min_delay_s, config.reconnect.max_delay_s)
        self.fatal: MqttError | None = None
        self.connections = 0
        self._generation = 0
        self._new_connection = False
        self.stale_acks = 0  # acks not sent: their message came on an earlier connection
        self.dropped_offline = 0  # QoS 0 / retained messages paho could not take offline
        # Non-retained publishes go through the outbox while the link is down (agent/outbox.py).
        window = max_inflight or 256  # stored results in flight while draining
        self._relay = None if outbox is None else Relay(outbox, self._send_now, window=window)

        self._client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
            clean_session=None if self._v5 else False,
            manual_ack=manual_ack,
        )
        self._client.connect_timeout = config.connect_timeout_s
        self._client.max_inflight_messages_set(max_inflight)  # QoS 1 publishes awaiting PUBACK
        self._client.max_queued_messages_set(0)
        configure_connection(self._client, config, password)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.fast_handler = self._dispatch
        if on_read_done is not None:
            self._client.after_read = self._read_done
        self._client.on_publish = self._handle_publish
        # With our own loop() paho writes to the socket from whichever thread publishes,
        # racing the network thread (interleaved packets). A register-write hook makes it
        # queue and wake the network thread instead (paho.mqtt.python PR #374).
        self._client.on_socket_register_write = _write_on_network_thread

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if self._relay is not None:
            self._relay.start()
        self._thread = threading.Thread(target=self._run, name="mqtt-network", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self, final: tuple[str, bytes] | None = None, timeout: float = 2.0) -> None:
        """Publish `final` (retained, QoS 1) if connected, then disconnect cleanly."""
        if final is not None and self.connected:
            # paho's own publish: its MQTTMessageInfo can be waited on
            info = paho.Client.publish(self._client, final[0], final[1], qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("final status not confirmed: %s", exc)
        self._stop.set()
        self._client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._relay is not None:
            self._relay.stop()

    def alive(self) -> bool:
        """The network thread is running (for the health check)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        cfg = self._config
        self._client.net_thread = threading.get_ident()
        while not self._stop.is_set():
            try:
                self._connect()
            except (OSError, ssl.SSLError, ValueError) as exc:
                delay = self._backoff.next()
                log.warning(
                    "cannot connect to MQTT broker %s:%d: %s; retrying in %.1fs",
                    cfg.host,
                    cfg.port,
                    _describe(exc),
                    delay,
                )
                self._stop.wait(delay)
                continue
            rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            while not self._stop.is_set() and rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                try:
                    rc = self._client.loop(timeout=0.5)
                except (OSError, ssl.SSLError) as exc:
                    log.warning("MQTT connection error: %s", _describe(exc))
                    break
                except Exception:  # never let a bug end the network thread: reconnect
                    log.exception("MQTT network loop failed; reconnecting")
                    break
                if self._new_connection:  # the CONNACK and paho's resends are processed
                    self._new_connection = False
                    if self._relay is not None:
                        self._relay.link(True)
            self._connected.clear()
            if self._relay is not None:
                self._relay.link(False)
            if self.fatal is not None or self._stop.is_set():
                break
            delay = self._backoff.next()
            log.info("MQTT connection lost; reconnecting in %.1fs", delay)
            self._stop.wait(delay)

    def _connect(self) -> None:
        cfg = self._config
        self._client.reset_buffer()  # bytes left from a lost connection are not ours
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = cfg.session_expiry_s
            if self._receive_maximum:  # backpressure: the broker holds the rest for us
                props.ReceiveMaximum = min(65535, self._receive_maximum)
            self._client.connect(
                cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=props
            )
        else:
            self._client.connect(cfg.host, cfg.port, cfg.keepalive_s)

    # ------------------------------------------------------------------ paho callbacks

    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            value = int(reason.value)
            if value in _FATAL_CONNACK:
                self.fatal = MqttAuthError(
                    f"broker {self._config.host}:{self._config.port} refused the connection: "
                    f"{_FATAL_CONNACK[value]} (check mqtt.username and the password file)"
                )
                self._stop.set()  # the application reports it, once
            else:
                log.warning("broker refused the connection: %s", reason)
            client.disconnect()
            return
        self._backoff.reset()
        self.connections += 1
        sock = client.socket()
        if isinstance(sock, socket.socket):  # paho leaves Nagle on: small answers would wait
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                log.debug("cannot set TCP_NODELAY: %s", exc)
        self._generation += 1
        self._new_connection = True
        session = bool(getattr(flags, "session_present", False))
        log.info(
            "connected to MQTT broker %s:%d (session present: %s)",
            self._config.host,
            self._config.port,
            session,
        )
        if self._subscriptions:
            client.subscribe(list(self._subscriptions))
        if self._ledger is not None:
            self._forget_stale_filters(client, session)
        self._connected.set()
        if self._on_connected is not None:
            try:
                self._on_connected(session)
            except Exception:  # a raising callback would kill paho's network thread
                log.exception("on_connected handler failed")

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._connected.clear()
        if self._relay is not None:
            self._relay.link(False)
        if not self._stop.is_set():
            log.warning("disconnected from MQTT broker: %s", reason)

    def _handle_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        response_topic: str | None = None
        correlation: bytes | None = None
        props = getattr(msg, "properties", None)
        if props is not None:
            response_topic = getattr(props, "ResponseTopic", None)
            correlation = getattr(props, "CorrelationData", None)
        self._dispatch(
            msg.topic,
            bytes(msg.payload),
            msg.qos,
            bool(msg.retain),
            msg.mid,
            bool(msg.dup),
            response_topic,
            correlation,
        )

    def _dispatch(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        mid: int,
        dup: bool,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        message = Message(
            topic=topic,
            payload=payload,
            qos=qos,
            retain=retain,
            mid=mid,
            response_topic=response_topic,
            correlation_data=correlation,
            dup=dup,
            generation=self._generation,
        )
        try:
            self._on_message(message)
        except Exception:
            log.exception("message handler failed for %s", topic)

    def _read_done(self) -> None:
        assert self._on_read_done is not None
        try:
            self._on_read_done()
        except Exception:
            log.exception("read handler failed")

    def _handle_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        with self._delivered_lock:
            callback = self._delivery_callbacks.pop(mid, None)
            if callback is None:
                self._early_deliveries.add(mid)
                if len(self._early_deliveries) > 10_000:
                    self._early_deliveries.clear()
                return
        try:
            callback()
        except Exception:
            log.exception("delivery callback failed")

    # ------------------------------------------------------------------ API

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> bool:
        """Queue a message; `on_delivered` runs once the broker has it (PUBACK for QoS 1,
        written for QoS 0) or, while the link is down, once it is stored in the outbox.
        Returns False if it was refused outright (invalid topic, outbox full)."""
        message = OutMessage(topic, payload, qos, retain, correlation_data)
        # Through the outbox, in order, what must arrive: QoS 1, or its sender waits for
        # delivery. QoS 0 telemetry is at-most-once by choice: dropped offline, counted.
        if self._relay is not None and (qos > 0 or on_delivered is not None):
            return self._relay.publish(message, on_delivered)
        result = self._send_now(message, on_delivered or _nothing)
        if result == "offline":
            self.dropped_offline += 1
        return result != "refused"

    def _send_now(self, message: OutMessage, on_delivered: Callable[[], None]) -> SendResult:
        if message.topic not in self._valid_topics and not self._check_topic(message.topic):
            log.warning("publish to %r refused: not a valid topic", message.topic[:80])
            return "refused"
        properties = None
        if message.correlation_data is not None and self._v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = message.correlation_data
        try:
            info = self._client.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                retain=message.retain,
                properties=properties,
            )
        except ValueError as exc:  # invalid topic (wildcards, bad UTF-8) or payload size
            log.warning("publish to %r refused: %s", message.topic[:80], exc)
            return "refused"
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and message.qos == 0:
            return "offline"  # paho keeps QoS 1 for the reconnect, but drops QoS 0
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("publish to %s refused: %s", message.topic, paho.error_string(info.rc))
            return "refused"
        # Always register (a no-op at worst): an unclaimed early PUBACK would otherwise stay
        # in `_early_deliveries` and fire a later publish's callback once mids wrap around.
        with self._delivered_lock:
            early = info.mid in self._early_deliveries
            if early:
                self._early_deliveries.discard(info.mid)
            else:
                self._delivery_callbacks[info.mid] = on_delivered
        if early:
            on_delivered()
        return "sent"

    def _check_topic(self, topic: str) -> bool:
        """valid_topic, remembering the valid ones (a few hundred: answers go to a handful)."""
        if not valid_topic(topic):
            return False
        if len(self._valid_topics) >= 512:
            self._valid_topics.clear()
        self._valid_topics.add(topic)
        return True

    def outbox_backlog(self) -> int:
        return self._relay.backlog if self._relay is not None else 0

    def ack(self, message: Message) -> None:
        if message.qos == 0:
            return
        if message.generation != self._generation or not self.connected:
            # Its connection is gone: the broker redelivers it on this one (DUP), and that
            # copy is acknowledged instead. An ack by mid here could hit another message.
            self.stale_acks += 1
            return
        self._client.ack(message.mid, message.qos)

    def subscribe(self, topic: str, qos: int) -> None:
        self._subscriptions.append((topic, qos))
        if self._ledger is not None:
            self._ledger.record(t for t, _ in self._subscriptions)
        if self.connected:
            self._client.subscribe(topic, qos)

    def _forget_stale_filters(self, client: paho.Client, session: bool) -> None:
        """A stored session keeps the filters of the previous run: drop those this run does
        not ask for (e.g. the plain request filter after `workers.processes` went from 1
        to 2, which would deliver every request beside the shared subscription)."""
        assert self._ledger is not None
        wanted = [t for t, _ in self._subscriptions]
        if session and self.connections == 1:
            stale = [f for f in self._ledger.filters() if f not in wanted]
            if stale:
                log.info("unsubscribing filters this configuration no longer uses: %s", stale)
                client.unsubscribe(stale)
        self._ledger.record(wanted)


# What mosquitto refuses in a PUBLISH topic by disconnecting the client (MQTT 5 1.5.4): NUL,
# control characters, surrogates, non-characters; plus the wildcards. A QoS 1 message with
# such a topic would be resent after every reconnect, a loop no reconnect can end.
_NON_CHARS = "".join(f"{chr(p | 0xFFFE)}{chr(p | 0xFFFF)}" for p in range(0, 0x110000, 0x10000))
_BAD_TOPIC = re.compile(f"[+#\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef{_NON_CHARS}]")


def valid_topic(topic: str) -> bool:
    """A topic the broker will take in a PUBLISH."""
    if not topic or _BAD_TOPIC.search(topic) is not None:
        return False
    return len(topic) <= 16_383 or len(topic.encode()) <= 65_535


def _write_on_network_thread(client: paho.Client, userdata: Any, sock: Any) -> None:
    return None


def _nothing() -> None:
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__
