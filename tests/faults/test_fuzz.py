"""Fuzzing the payload path (hypothesis): whatever arrives on a request topic, with whatever
MQTT 5 response topic, gets exactly one outcome (one acknowledgement, at most one answer,
never a publish to a topic with wildcards or NUL) and no worker dies. Plus the MQTT
boundary: raising callbacks and hostile topics do not kill the network thread."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.app import build_tasks, load_worker_models
from agent.config import MqttConfig, load_config
from agent.dedupe import Dedupe
from agent.devtools.broker import Mosquitto
from agent.engine import Engine
from agent.mqtt.client import Message, MqttClient
from agent.mqtt.topics import Topics
from agent.registry import Registry
from agent.stats import Stats
from tests.faults.harness import DEPLOY_CONFIG, FULL, PIXELS
from tests.helpers import RecordingPublisher


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[Engine, RecordingPublisher]]:
    config = load_config(
        DEPLOY_CONFIG, environ={"EDGE_AGENT_ID": "fuzz", "EDGE_AGENT_WORKERS__COUNT": "1"}
    )
    config = config.model_copy(update={"cloud": config.cloud.model_copy(update={"url": None})})
    tasks = build_tasks(config, Registry(config.models.dir))
    pub = RecordingPublisher()
    eng = Engine(
        config,
        Topics(config.base_topic, config.id),
        pub,
        Stats(),
        tasks,
        load_worker_models(config, tasks),
        None,
        dedupe=Dedupe(),
    )
    eng.start()
    yield eng, pub
    eng.stop(1.0)


hostile_text = st.sampled_from(
    ["", "a", "a/b", "#", "+", "a\x00b", "x" * 300, "$SYS/x", "\u202e", "é", "\ud800"]
) | st.text(max_size=40)
numbers = (
    st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 16, 17, -1, 1e308])
)
leaf = st.none() | st.booleans() | numbers | hostile_text
json_value = st.recursive(
    leaf,
    lambda kids: st.lists(kids, max_size=9) | st.dictionaries(hostile_text, kids, max_size=5),
    max_leaves=80,
)
grid = st.lists(st.lists(numbers | leaf, min_size=0, max_size=10), min_size=0, max_size=10)
near_valid = st.fixed_dictionaries(
    {"id": hostile_text | st.uuids().map(str) | json_value, "input": json_value},
    optional={
        "route": st.sampled_from(["auto", "edge", "cloud", "moon", 3]),
        "deadline_ms": st.integers(-10, 10**7) | leaf,
        "x": json_value,
    },
).map(lambda d: json.dumps(d).encode())  # lone surrogates become \ud800 escapes
valid_shaped = st.builds(
    lambda rid, g, pick: json.dumps(
        {"id": rid, "input": {"pixels": g if pick else PIXELS[len(rid) % len(PIXELS)]}}
    ).encode(),
    st.uuids().map(str),
    grid,
    st.booleans(),
)
raw = st.binary(max_size=300)
nan_text = st.sampled_from(
    [b'{"id": "n", "input": {"pixels": [[NaN]]}}', b'{"id": "i", "input": Infinity}']
)
deep = st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n)
payloads = (
    raw
    | near_valid
    | valid_shaped
    | nan_text
    | deep
    | json_value.map(lambda v: json.dumps(v).encode())
)
tasks = st.sampled_from(["digits", "digits", "digits", "unknown", "a+b", ""])
response_topics = st.none() | hostile_text


@settings(
    max_examples=3000 if FULL else 300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(payload=payloads, task=tasks, response_topic=response_topics)
def test_any_message_gets_exactly_one_outcome(
    engine: tuple[Engine, RecordingPublisher],
    payload: bytes,
    task: str,
    response_topic: str | None,
) -> None:
    eng, pub = engine
    mid = _next_mid()
    topic = f"edge-agent/fuzz/request/{task}"
    eng.submit(Message(topic, payload, 1, False, mid, response_topic, b"corr"))
    end = time.monotonic() + 10
    while time.monotonic() < end and pub.acks[mid] == 0:
        time.sleep(0.001)
    time.sleep(0.002)
    assert pub.acks[mid] == 1, "exactly one acknowledgement (one outcome) per message"
    assert eng.healthy(30)[0]


_mids = iter(range(1, 10**9))


def _next_mid() -> int:
    return next(_mids)


# ----------------------------------------------------------------------------- boundary


def test_raising_callbacks_do_not_kill_the_network_thread() -> None:
    got: list[bytes] = []

    def on_message(message: Message) -> None:
        got.append(message.payload)
        raise RuntimeError("handler bug")

    def on_connected(session: bool) -> None:
        raise RuntimeError("on_connected bug")

    with Mosquitto() as broker:
        config = MqttConfig(host=broker.host, port=broker.port)  # type: ignore[call-arg]
        client = MqttClient(
            config,
            "raising",
            will=None,
            subscriptions=[("fuzz/#", 1)],
            on_message=on_message,
            on_connected=on_connected,
            manual_ack=False,
        )
        client.start()
        assert client.wait_connected(5)
        time.sleep(0.2)
        for i in range(5):
            assert client.publish("fuzz/x", str(i).encode(), qos=1)
        end = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < end:
            time.sleep(0.01)
        assert len(got) == 5 and client.alive()

        def raising_delivery() -> None:
            raise RuntimeError("delivery callback bug")

        assert client.publish("fuzz/y", b"1", qos=1, on_delivered=raising_delivery)
        time.sleep(0.3)
        assert client.alive() and client.connected
        client.stop()


@pytest.mark.parametrize(
    "topic",
    ["a/+/b", "a/#", "nul\x00", "ctl\x01", "\ufffe", "", "\udcff", "x" * 70_000],
    ids=lambda t: repr(t[:12]),
)
def test_publishing_to_a_hostile_topic_is_refused_not_raised(topic: str) -> None:
    with Mosquitto() as broker:
        config = MqttConfig(host=broker.host, port=broker.port)  # type: ignore[call-arg]
        client = MqttClient(
            config, "hostile", will=None, subscriptions=[], on_message=lambda m: None
        )
        client.start()
        assert client.wait_connected(5)
        assert client.publish(topic, b"x", qos=1) is False
        assert client.publish("fine/topic", b"x", qos=1) is True
        assert client.alive()
        client.stop()
