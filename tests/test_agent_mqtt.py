"""The agent in-process against a real mosquitto, the real cloud service and real models."""

from __future__ import annotations

import base64
import time

import numpy as np
import orjson
import pytest

from agent.devtools.broker import Mosquitto
from agent.devtools.client import RequestClient
from agent.imaging import encode_png
from agent.registry import load_testset
from tests.conftest import MODELS
from tests.helpers import agent_config, running_agent

X_TEST, Y_TEST = load_testset(MODELS / "digits" / "testset.npz")


def test_200_held_out_digits_all_answered_accurately(broker: Mosquitto, cloud_url: str) -> None:
    config = agent_config(broker, cloud_url)
    with running_agent(config) as agent, RequestClient(broker.host, broker.port, config.id) as c:
        ids = [c.send("digits", {"pixels": X_TEST[i].tolist()}) for i in range(200)]
        assert c.wait_for(ids, 30)
        answers = [c.answers[r] for r in ids]
        assert all(len(a) == 1 for a in answers), "exactly one answer per request"
        assert all(a[0]["ok"] for a in answers)
        labels = np.array([int(a[0]["result"]["label"]) for a in answers])
        accuracy = float((labels == Y_TEST[:200]).mean())
        assert accuracy >= 0.97
        sources = {a[0]["source"] for a in answers}
        assert sources <= {"edge", "cloud"}
        first = answers[0][0]
        assert set(first) >= {
            "id",
            "task",
            "ok",
            "result",
            "source",
            "model",
            "model_version",
            "latency_ms",
            "degraded",
        }
        assert set(first["result"]) == {"label", "score", "top"}
        end = time.monotonic() + 2  # the counter is updated right after the publish
        while agent.stats.snapshot()["tasks"]["digits"]["answered"] < 200:
            assert time.monotonic() < end
            time.sleep(0.01)
        assert agent.stats.snapshot()["tasks"]["digits"]["answered"] == 200


def test_routes_edge_and_cloud_are_forced(broker: Mosquitto, cloud_url: str) -> None:
    config = agent_config(broker, cloud_url)
    with running_agent(config), RequestClient(broker.host, broker.port, config.id) as c:
        edge = c.send("digits", {"pixels": X_TEST[0].tolist()}, route="edge")
        cloud = c.send("digits", {"pixels": X_TEST[0].tolist()}, route="cloud")
        assert c.wait_for([edge, cloud], 10)
        assert c.answers[edge][0]["source"] == "edge"
        assert c.answers[cloud][0]["source"] == "cloud"
        assert c.answers[cloud][0]["model"] == "digits"
        assert c.answers[cloud][0]["degraded"] is False


def test_image_inputs_png_and_nested_lists(broker: Mosquitto, cloud_url: str) -> None:
    config = agent_config(broker, cloud_url)
    grid = X_TEST[:20]
    with running_agent(config), RequestClient(broker.host, broker.port, config.id) as c:
        ids = []
        for g in grid:
            big = np.kron(g, np.ones((8, 8))) * (255 / 16)
            img = (255 - big).astype(np.uint8)  # dark ink on white paper, 64x64
            ids.append(c.send("digits", {"image": base64.b64encode(encode_png(img)).decode()}))
            ids.append(c.send("digits", {"image": big.astype(int).tolist()}, route="edge"))
        assert c.wait_for(ids, 20)
        labels = [int(c.answers[r][0]["result"]["label"]) for r in ids]
        expected = np.repeat(Y_TEST[:20], 2)
        assert np.mean(np.array(labels) == expected) >= 0.9


MALFORMED: list[tuple[str, bytes]] = [
    ("digits", b"not json"),
    ("digits", b""),
    ("digits", b"[1, 2, 3]"),
    ("digits", b'"a string"'),
    ("digits", b"{}"),
    ("digits", b'{"input": {"pixels": []}}'),
    ("digits", b'{"id": 5, "input": {}}'),
    ("digits", b'{"id": "", "input": {}}'),
    ("digits", b'{"id": "a", "input": "x"}'),
    ("digits", b'{"id": "a", "input": {"pixels": NaN}}'),
    ("digits", b'{"id": "a", "input": {"pixels": [[NaN]]}}'),
    ("digits", b'{"id": "a", "input": {"pixels": [[Infinity]]}}'),
    ("digits", b'{"id": "a", "input": {"pixels": [[1, 2], [3]]}}'),
    ("digits", b'{"id": "a", "input": {"pixels": [[1, 2], [3, 4]]}}'),
    ("digits", b'{"id": "a", "input": {"pixels": [["1"]]}}'),
    ("digits", b'{"id": "a", "input": {"pixels": [[true]]}}'),
    ("digits", b'{"id": "a", "input": {}}'),
    ("digits", b'{"id": "a", "input": {"pixels": 1, "image": 2}}'),
    ("digits", b'{"id": "a", "input": {"colour": 1}}'),
    ("digits", b'{"id": "a", "input": {"image": "!!!notbase64"}}'),
    ("digits", b'{"id": "a", "input": {"image": "aGVsbG8="}}'),
    ("digits", b'{"id": "a", "input": {"image": 7}}'),
    ("digits", b'{"id": "a", "input": {"image": [[300, 1], [2, 3]]}}'),
    ("digits", b'{"id": "a", "input": {"image": [[-1, 1], [2, 3]]}}'),
    ("digits", b'{"id": "a", "route": "moon", "input": {}}'),
    ("digits", b'{"id": "a", "deadline_ms": "soon", "input": {}}'),
    ("digits", b'{"id": "a", "deadline_ms": -5, "input": {}}'),
    ("digits", b'{"id": "a", "deadline_ms": 99999999, "input": {}}'),
    ("digits", b'{"id": "a/b#", "input": {}}'),
    ("digits", b'{"id": "' + b"x" * 500 + b'", "input": {}}'),
    ("digits", b"[" * 5000 + b"]" * 5000),
    ("digits", b'{"id": "a", "input": {"pixels": ' + b"[" * 3000 + b"]" * 3000 + b"}}"),
    ("digits", b"\xff\xfe\x00garbage"),
    ("digits", b'{"id": "a", "input": {"pixels": [[1e999]]}}'),
    ("digits", b'{"id": "a", "input": {"pixels": [[17, 0, 0, 0, 0, 0, 0, 0]]}}'),
    ("digits", b'{"id":"a","input":{"pixels":' + orjson.dumps([[20] * 8] * 8) + b"}}"),
    ("digits", b'{"id": "a", "input": {"image": ' + orjson.dumps([[1] * 5000] * 1) + b"}}"),
    ("unknown", b'{"id": "a", "input": {}}'),
    ("nope", b"not json either"),
    ("digits", b"x" * 1_100_000),
    ("digits", b'{"id": "a", "input": {"image": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"}}'),
    ("digits", b'{"id": null, "input": {}}'),
    ("digits", b'{"id": ["a"], "input": {}}'),
    ("digits", b'{"id": "a", "input": null}'),
    ("digits", b'{"id": "a", "input": {"pixels": {"a": 1}}}'),
    ("digits", b'{"id": "a", "input": {"pixels": [[null]]}}'),
    ("digits", b"{'id': 'a'}"),
    ("digits", b'{"id": "a", "input": {"pixels": [1, 2, 3, 4, 5, 6, 7, 8]}}'),
    ("digits", b"123"),
    ("digits", b"null"),
]


def test_50_malformed_payloads_give_50_errors_and_the_agent_keeps_serving(
    broker: Mosquitto, cloud_url: str
) -> None:
    assert len(MALFORMED) == 50
    config = agent_config(broker, cloud_url)
    with running_agent(config) as agent, RequestClient(broker.host, broker.port, config.id) as c:
        for task, payload in MALFORMED:
            c.publish_raw(f"edge-agent/{config.id}/request/{task}", payload)
        errors = c.wait_messages("/error", 50, 20)
        time.sleep(0.5)  # nothing more may arrive
        errors = c.wait_messages("/error", 51, 0.1)
        assert len(errors) == 50
        for raw in errors:
            body = orjson.loads(raw)
            assert set(body) == {"topic", "code", "message", "ts"}
            assert body["code"] and body["message"]
        codes = {orjson.loads(e)["code"] for e in errors}
        assert {
            "invalid_json",
            "missing_id",
            "not_finite",
            "unknown_task",
            "payload_too_large",
            "invalid_input",
            "out_of_range",
        } <= codes
        assert agent.engine.healthy(30)[0]
        rid = c.send("digits", {"pixels": X_TEST[0].tolist()})
        assert c.wait_for([rid], 10)
        assert c.answers[rid][0]["ok"] is True
        # requests whose id could be read also got an ok:false response
        failed = [a[0] for a in c.answers.values() if not a[0]["ok"]]
        assert failed and all(f["error"]["code"] for f in failed)


def test_cloud_down_auto_requests_degrade_within_deadline(broker: Mosquitto) -> None:
    from agent.devtools.broker import free_port

    dead_cloud = f"http://127.0.0.1:{free_port()}"
    config = agent_config(broker, dead_cloud)
    deadline_ms = 1000
    with running_agent(config), RequestClient(broker.host, broker.port, config.id) as c:
        ids = [
            c.send("digits", {"pixels": X_TEST[i].tolist()}, deadline_ms=deadline_ms)
            for i in range(100)
        ]
        assert c.wait_for(ids, 20)
        time.sleep(0.3)
        for rid in ids:
            answers = c.answers[rid]
            assert len(answers) == 1, "no duplicates"
            assert answers[0]["ok"] is True
            assert c.latency_ms(rid) is not None and c.latency_ms(rid) < deadline_ms  # type: ignore[operator]
        degraded = [c.answers[r][0] for r in ids if c.answers[r][0]["degraded"]]
        # the held-out set has low-confidence digits: those wanted the cloud
        assert degraded, "some requests wanted the cloud"
        assert all(a["source"] == "edge" and a["degraded_reason"] for a in degraded)


def test_slow_cloud_is_cut_off_at_the_deadline(broker: Mosquitto, tmp_path: object) -> None:
    """A cloud that accepts the connection but never answers: the deadline timer answers."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(50)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    config = agent_config(broker, f"http://127.0.0.1:{server.getsockname()[1]}")
    try:
        with running_agent(config), RequestClient(broker.host, broker.port, config.id) as c:
            ids = [
                c.send("digits", {"pixels": X_TEST[i].tolist()}, route="cloud", deadline_ms=500)
                for i in range(10)
            ]
            assert c.wait_for(ids, 10)
            for rid in ids:
                assert len(c.answers[rid]) == 1
                assert c.answers[rid][0]["degraded"] is True
                assert c.latency_ms(rid) < 500  # type: ignore[operator]
    finally:
        stop.set()
        server.close()
        for s in held:
            s.close()


def test_mqtt5_response_topic_and_correlation_data(broker: Mosquitto, cloud_url: str) -> None:
    """A request carrying an MQTT 5 response topic is answered there with its correlation."""
    from agent.config import MqttConfig
    from agent.mqtt.client import Message, MqttClient

    config = agent_config(broker, cloud_url)
    got: list[Message] = []
    reply_to = f"clients/{config.id}/inbox"
    with running_agent(config):
        client = MqttClient(
            MqttConfig(host=broker.host, port=broker.port),  # type: ignore[call-arg]
            "corr-test",
            will=None,
            subscriptions=[(reply_to, 1)],
            on_message=got.append,
            manual_ack=False,
        )
        client.start()
        assert client.wait_connected(5)
        time.sleep(0.2)
        client._client.publish(  # a raw publish with MQTT 5 properties
            f"edge-agent/{config.id}/request/digits",
            orjson.dumps({"id": "corr-1", "input": {"pixels": X_TEST[0].tolist()}}),
            qos=1,
            properties=_props(reply_to, b"\x01\x02corr"),
        )
        end = time.monotonic() + 10
        while not got and time.monotonic() < end:
            time.sleep(0.05)
        client.stop()
    assert got, "no answer on the response topic"
    assert got[0].topic == reply_to
    assert got[0].correlation_data == b"\x01\x02corr"
    assert orjson.loads(got[0].payload)["id"] == "corr-1"


def _props(response_topic: str, correlation: bytes) -> object:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    return props


def test_stats_are_published_retained(broker: Mosquitto, cloud_url: str) -> None:
    config = agent_config(broker, cloud_url)
    with (
        running_agent(config),
        RequestClient(
            broker.host,
            broker.port,
            config.id,
            extra_subscriptions=[f"edge-agent/{config.id}/stats"],
        ) as c,
    ):
        rid = c.send("digits", {"pixels": X_TEST[0].tolist()})
        assert c.wait_for([rid], 10)
        stats = c.wait_messages("/stats", 2, 5)
        body = orjson.loads(stats[-1])
        assert body["messages_in"] >= 1
        assert {"messages_out", "errors", "tasks", "queue_depth", "uptime_s"} <= set(body)
        assert body["tasks"]["digits"]["latency_ms"]["p50"] is not None


@pytest.mark.parametrize("protocol", ["3.1.1"])
def test_mqtt_311_works(broker: Mosquitto, cloud_url: str, protocol: str) -> None:
    config = agent_config(broker, cloud_url, EDGE_AGENT_MQTT__PROTOCOL=protocol)
    with running_agent(config), RequestClient(broker.host, broker.port, config.id) as c:
        rid = c.send("digits", {"pixels": X_TEST[3].tolist()})
        assert c.wait_for([rid], 10)
        assert c.answers[rid][0]["ok"]
