"""Stored MQTT sessions: the ledger of their filters, and draining a dropped one.

Real mosquitto (its own, with a temporary config) and plain paho clients standing in for a
dropped serving process's earlier run and for a live subscriber.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttConfig
from agent.devtools.broker import Mosquitto, free_port
from agent.errors import MqttError
from agent.mqtt.drain import drain_session
from agent.mqtt.ledger import SessionLedger, stored_sessions
from agent.service.serving import SessionCleanup


@pytest.fixture(scope="module")
def broker() -> Iterator[Mosquitto]:
    with Mosquitto(persistence=False) as b:
        yield b


def _client(client_id: str, v5: bool, clean: bool = False) -> paho.Client:
    return paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else clean,
    )


def _connect(c: paho.Client, broker: Mosquitto, v5: bool, expiry: int = 300) -> bool:
    """Connect and return the CONNACK's session-present flag."""
    present: list[bool] = []
    done = threading.Event()

    def on_connect(_c: paho.Client, _u: object, flags: object, _r: object, _p: object) -> None:
        present.append(bool(getattr(flags, "session_present", False)))
        done.set()

    c.on_connect = on_connect
    if v5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = expiry
        c.connect(broker.host, broker.port, 30, clean_start=False, properties=props)
    else:
        c.connect(broker.host, broker.port, 30)
    c.loop_start()
    assert done.wait(5)
    return present[0]


def _leave_session(broker: Mosquitto, client_id: str, topic_filter: str, v5: bool) -> None:
    """What a serving process leaves behind: a stored session subscribed to a filter."""
    c = _client(client_id, v5)
    _connect(c, broker, v5)
    subscribed = threading.Event()
    c.on_subscribe = lambda *_: subscribed.set()
    c.subscribe(topic_filter, 1)
    assert subscribed.wait(5)
    c.disconnect()
    c.loop_stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_drain_moves_the_queued_messages_to_live_subscribers_and_ends_the_session(
    broker: Mosquitto, protocol: str
) -> None:
    v5 = protocol == "5"
    tag = protocol.replace(".", "")
    dropped, topic = f"agent-p9-{tag}", f"drain{tag}/request/digits"
    _leave_session(broker, dropped, f"$share/g{tag}/drain{tag}/request/+", v5)

    publisher = _client(f"pub-{tag}", v5, clean=True)
    _connect(publisher, broker, v5, expiry=0)
    for i in range(20):  # queued for the stored session: it is the share's only member
        props = None
        if v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = f"replies/{i}"
            props.CorrelationData = f"c{i}".encode()
            props.UserProperty = [("k", str(i))]
        publisher.publish(topic, f"m{i}".encode(), qos=1, properties=props).wait_for_publish(5)

    got: list[paho.MQTTMessage] = []
    live = _client(f"live-{tag}", v5, clean=True)
    live.on_message = lambda _c, _u, m: got.append(m)
    _connect(live, broker, v5, expiry=0)
    live.subscribe(f"drain{tag}/request/+", 1)
    time.sleep(0.3)
    try:
        config = MqttConfig.model_validate(
            {"host": broker.host, "port": broker.port, "protocol": protocol}
        )
        moved = drain_session(config, None, dropped, [f"$share/g{tag}/drain{tag}/request/+"])
        assert moved == 20
        deadline = time.monotonic() + 5
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(m.payload for m in got) == sorted(f"m{i}".encode() for i in range(20))
        assert all(m.topic == topic and m.qos == 1 for m in got)
        if v5:  # the properties an answer needs came along
            for m in got:
                i = int(m.payload[1:])
                assert m.properties.ResponseTopic == f"replies/{i}"
                assert m.properties.CorrelationData == f"c{i}".encode()
                assert ("k", str(i)) in m.properties.UserProperty
        # the session is gone: nothing stored, nothing queued for it any more
        again = _client(dropped, v5)
        assert _connect(again, broker, v5) is False
        again.disconnect()
        again.loop_stop()
    finally:
        for c in (publisher, live):
            c.disconnect()
            c.loop_stop()


def test_drain_fails_loudly_when_the_broker_is_away() -> None:
    config = MqttConfig.model_validate({"host": "127.0.0.1", "port": free_port()})
    with pytest.raises(MqttError, match="cannot connect as agent-p1"):
        drain_session(config, None, "agent-p1", ["x/#"], timeout_s=2.0)


def test_ledger_records_filters_atomically_and_ignores_bad_records(tmp_path: Path) -> None:
    ledger = SessionLedger(tmp_path, "edge-agent-x/p 1")
    assert ledger.filters() == []
    ledger.record(["a/+", "b/#", "a/+"])
    assert ledger.filters() == ["a/+", "b/#"]
    assert ledger.path.parent == tmp_path and "/" not in ledger.path.name[len("mqtt-") :]
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "mqtt-session-junk.json").write_text("[1, 2")
    (tmp_path / "mqtt-session-list.json").write_text("[1, 2]")
    (tmp_path / "mqtt-session-types.json").write_text('{"client_id": 3, "filters": []}')
    assert [(s.client_id, s.filters) for s in stored_sessions(tmp_path)] == [
        ("edge-agent-x/p 1", ["a/+", "b/#"])
    ]
    # a record naming another client id (two ids that map to one file name) is not ours
    assert SessionLedger(tmp_path, "edge-agent-x/p_1").filters() == []


def test_ledger_write_failure_is_logged_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    SessionLedger(blocker / "state", "c").record(["a"])  # no exception


def test_cleanup_picks_only_this_agents_dropped_serving_processes(tmp_path: Path) -> None:
    for client_id in (
        "edge-agent-x",  # the main process
        "edge-agent-x-p1",  # still started with processes: 3
        "edge-agent-x-p2",
        "edge-agent-x-p3",  # dropped
        "edge-agent-x-p10",  # dropped
        "edge-agent-x-pilot",  # not a serving process
        "edge-agent-xy-p5",  # another agent's
    ):
        SessionLedger(tmp_path, client_id).record([f"{client_id}/f"])
    config = MqttConfig.model_validate({})
    cleanup = SessionCleanup(config, None, tmp_path, "edge-agent-x", processes=3)
    assert sorted(s.client_id for s in cleanup.dropped()) == ["edge-agent-x-p10", "edge-agent-x-p3"]
    assert SessionCleanup(config, None, tmp_path, "edge-agent-x", processes=1).dropped()[
        0
    ].filters == ["edge-agent-x-p1/f"]
