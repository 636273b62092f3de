"""Hand on what a dropped serving process's MQTT session holds, then end that session.

After `workers.processes` is lowered, the sessions `<client id>-p<K>` of the serving
processes that no longer start stay on the broker until they expire, and they are still
members of the shared request subscription: requests sent while the whole agent is stopped
are queued across all of them, and the dropped ones are never answered (mosquitto 2.0.11,
going from 2 processes to 1: half of them). At start the agent connects as each dropped
client id it has a record of (agent/mqtt/ledger.py), unsubscribes its filters, publishes
every message that was queued for it again, on the same topic with the same QoS and
properties (so a live process answers it), acknowledges the original once the broker has the
copy, and ends the session. A failure leaves the session and its record for the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.errors import MqttError
from agent.mqtt.client import configure_connection

log = logging.getLogger(__name__)

# what a republished copy keeps of the original's properties (not Topic Alias or
# Subscription Identifier: they belong to the original connection)
_KEPT = (
    "PayloadFormatIndicator",
    "MessageExpiryInterval",
    "ContentType",
    "ResponseTopic",
    "CorrelationData",
    "UserProperty",
)


class _Drain:
    def __init__(self, client: paho.Client, filters: list[str], v5: bool) -> None:
        self.client = client
        self.filters = filters
        self.v5 = v5
        self.lock = threading.RLock()  # paho may call on_publish inside publish() (QoS 0)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.unsubscribed = threading.Event()
        self.error: str | None = None
        self.held: list[paho.MQTTMessage] = []  # arrived before the UNSUBACK
        self.copies: dict[int, paho.MQTTMessage] = {}  # copy's mid -> original, until PUBACK
        self.moved = 0
        self.last_activity = time.monotonic()

    def on_connect(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            self.error = f"broker refused the connection: {reason}"
            self.connected.set()
            return
        self.connected.set()
        if self.filters:
            client.unsubscribe(self.filters)
        else:
            self._unsubscribed()

    def on_unsubscribe(self, _c: paho.Client, _u: Any, _m: int, _r: Any, _p: Any) -> None:
        self._unsubscribed()

    def _unsubscribed(self) -> None:
        with self.lock:
            held, self.held = self.held, []
            self.unsubscribed.set()
        for message in held:
            self._republish(message)

    def on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        self.last_activity = time.monotonic()
        with self.lock:
            # before the UNSUBACK a copy could come back to this very session (it is still
            # a member of the shared subscription): hold the originals until then
            if not self.unsubscribed.is_set():
                self.held.append(message)
                return
        self._republish(message)

    def _republish(self, message: paho.MQTTMessage) -> None:
        props = None
        if self.v5 and getattr(message, "properties", None) is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            for name in _KEPT:
                if hasattr(message.properties, name):
                    setattr(props, name, getattr(message.properties, name))
        with self.lock:
            info = self.client.publish(
                message.topic, message.payload, qos=message.qos, properties=props
            )
            if message.qos == 0:
                self.moved += 1
            else:
                self.copies[info.mid] = message
        self.last_activity = time.monotonic()

    def on_publish(self, client: paho.Client, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        with self.lock:
            original = self.copies.pop(mid, None)
            if original is None:
                return
            self.moved += 1
        client.ack(original.mid, original.qos)
        self.last_activity = time.monotonic()

    def settled(self, quiet_s: float) -> bool:
        with self.lock:
            idle = not self.copies and not self.held
        quiet = time.monotonic() - self.last_activity >= quiet_s
        return idle and quiet and self.unsubscribed.is_set()

    def on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        self.disconnected.set()


def drain_session(
    config: MqttConfig,
    password: str | None,
    client_id: str,
    filters: list[str],
    *,
    quiet_s: float = 1.0,
    timeout_s: float = 30.0,
) -> int:
    """Move what the session `client_id` holds to live subscribers and end the session.
    Returns how many messages were published again; raises MqttError if it could not
    finish (the session is then left as it was, minus what was already moved)."""
    v5 = config.protocol == "5"
    client = _client(config, password, client_id, clean=False)
    drain = _Drain(client, filters, v5)
    client.on_connect = drain.on_connect
    client.on_unsubscribe = drain.on_unsubscribe
    client.on_message = drain.on_message
    client.on_publish = drain.on_publish
    client.on_disconnect = drain.on_disconnect
    end = time.monotonic() + timeout_s
    _connect(client, config, client_id)
    client.loop_start()
    try:
        if not drain.connected.wait(max(0.0, end - time.monotonic())) or drain.error:
            raise MqttError(f"cannot connect as {client_id}: {drain.error or 'timed out'}")
        while not drain.settled(quiet_s):
            if time.monotonic() > end:
                raise MqttError(f"draining {client_id} did not finish in {timeout_s:.0f}s")
            time.sleep(0.05)
        _end_session(client, v5)
        if not drain.disconnected.wait(max(1.0, end - time.monotonic())):
            raise MqttError(f"ending the session of {client_id} timed out")
    finally:
        client.loop_stop()
    if not v5:  # 3.1.1 ends a stored session with a clean-session connection
        _clean_connect(config, password, client_id)
    return drain.moved


def _end_session(client: paho.Client, v5: bool) -> None:
    if v5:
        props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0  # the broker deletes the session now
        client.disconnect(properties=props)
    else:
        client.disconnect()


def _client(config: MqttConfig, password: str | None, client_id: str, clean: bool) -> paho.Client:
    """A plain paho client for one short job, with the agent's credentials and TLS. MQTT 5
    never starts clean here (a clean 3.1.1 connection is how 3.1.1 ends a session)."""
    v5 = config.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else clean,
        manual_ack=True,
    )
    configure_connection(client, config, password)
    return client


def _connect(client: paho.Client, config: MqttConfig, client_id: str) -> None:
    try:
        if config.protocol == "5":  # keep the stored session: it is what is being drained
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = max(1, config.session_expiry_s)
            client.connect(
                config.host, config.port, config.keepalive_s, clean_start=False, properties=props
            )
        else:
            client.connect(config.host, config.port, config.keepalive_s)
    except OSError as exc:
        raise MqttError(f"cannot connect as {client_id}: {exc}") from exc


def _clean_connect(config: MqttConfig, password: str | None, client_id: str) -> None:
    client = _client(config, password, client_id, clean=True)
    done = threading.Event()

    def on_connect(c: paho.Client, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        c.disconnect()

    def on_disconnect(_c: paho.Client, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    _connect(client, config, client_id)
    client.loop_start()
    try:
        if not done.wait(10.0):
            raise MqttError(f"cannot end the session of {client_id}")
    finally:
        client.loop_stop()
