"""The MQTT client's fast paths (buffered reads, direct PUBLISH/PUBACK decoding) deliver the
same messages as paho's own path: against a real mosquitto, with and without MQTT 5
properties, QoS 0 and 1, retained, bursts larger than one read buffer."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from agent.config import MqttConfig
from agent.devtools.broker import Mosquitto
from agent.mqtt.client import Message, MqttClient


def _client(
    broker: Mosquitto,
    subs: list[tuple[str, int]],
    got: list[Message],
    protocol: str = "5",
    manual_ack: bool = False,
) -> MqttClient:
    config = MqttConfig.model_validate(
        {"host": broker.host, "port": broker.port, "session_expiry_s": 0, "protocol": protocol}
    )
    return MqttClient(
        config,
        f"fp-{uuid.uuid4().hex[:6]}",
        will=None,
        subscriptions=subs,
        on_message=got.append,
        manual_ack=manual_ack,
    )


def _wait(pred: object, timeout: float = 10.0) -> bool:
    assert callable(pred)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_fast_path_messages_match_what_was_sent(protocol: str) -> None:
    with Mosquitto(persistence=False) as broker:
        got: list[Message] = []
        sub = _client(broker, [("fp/#", 1)], got, protocol)
        pub = _client(broker, [], [], protocol)
        for c in (sub, pub):
            c.start()
            assert c.wait_connected(10)
        time.sleep(0.3)
        n = 3000  # ~200 KB: several 64 KiB reads, packets split across reads
        for i in range(n):
            pub.publish(f"fp/{i % 7}", f"payload-{i}-".encode() * 5, qos=i % 2)
        pub.publish("fp/retained", b"kept", qos=1, retain=True)
        # an MQTT 5 property (correlation data) takes paho's own decoding path
        pub.publish("fp/props", b"with-props", qos=1, correlation_data=b"corr")
        assert _wait(lambda: len(got) == n + 2), len(got)
        by_payload = {m.payload: m for m in got}
        for i in range(n):
            m = by_payload[f"payload-{i}-".encode() * 5]
            assert (m.topic, m.qos, m.retain, m.dup) == (f"fp/{i % 7}", i % 2, False, False)
            assert (m.qos == 0) == (m.mid == 0)
        props = by_payload[b"with-props"]
        assert props.topic == "fp/props"
        if protocol == "5":
            assert props.correlation_data == b"corr"
        # a new subscriber gets the retained message with the retain flag
        late: list[Message] = []
        sub2 = _client(broker, [("fp/retained", 1)], late, protocol)
        sub2.start()
        assert _wait(lambda: len(late) == 1)
        assert late[0].retain is True and late[0].payload == b"kept"
        for c in (sub, pub, sub2):
            c.stop(timeout=1.0)


def test_manual_ack_and_puback_delivery_callbacks() -> None:
    """QoS 1 in with manual ack, and every QoS 1 publish's delivery callback fires once."""
    with Mosquitto(persistence=False) as broker:
        got: list[Message] = []
        sub = _client(broker, [("ack/#", 1)], got, manual_ack=True)
        pub = _client(broker, [], [])
        for c in (sub, pub):
            c.start()
            assert c.wait_connected(10)
        time.sleep(0.3)
        delivered = []
        lock = threading.Lock()

        def done(i: int) -> None:
            with lock:
                delivered.append(i)

        for i in range(500):
            pub.publish("ack/x", str(i).encode(), qos=1, on_delivered=lambda i=i: done(i))
        acked = 0
        end = time.monotonic() + 20
        while acked < 500 and time.monotonic() < end:  # the broker sends more as we ack
            while acked < len(got):
                sub.ack(got[acked])
                acked += 1
            time.sleep(0.01)
        assert acked == 500 and len(got) == 500
        assert sorted(int(m.payload) for m in got) == list(range(500))
        assert _wait(lambda: len(delivered) == 500)
        assert sorted(delivered) == list(range(500))
        for c in (sub, pub):
            c.stop(timeout=1.0)
