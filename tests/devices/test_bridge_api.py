"""The bridge request/response API (Zigbee2MQTT's pattern) on a real mosquitto and the
real agent: health, tasks, devices, reload with transaction ids, and errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml

from agent.devtools.broker import Mosquitto
from agent.devtools.client import RequestClient
from agent.registry import load_testset
from tests.devices.devhelpers import MODELS, Collector, running, write_config

X_DIGITS, _ = load_testset(MODELS / "digits" / "testset.npz")
AIR = {"id": "air-1", "profile": "zigbee2mqtt", "tasks": ["air_quality"]}


def ask(c: Collector, root: str, op: str, payload: bytes | str, timeout: float = 30.0) -> Any:
    topic = f"{root}/bridge/response/{op}"
    before = len(c.json_on(topic))
    c.publish(f"{root}/bridge/request/{op}", payload)
    assert c.wait(lambda ms: sum(m.topic == topic for m in ms) > before, timeout), op
    return c.json_on(topic)[-1]


def test_health_tasks_and_devices_echo_the_transaction(broker: Mosquitto, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker, [AIR])
    with running(path) as agent, Collector(broker, [f"{agent.topics.root}/#"]) as c:
        root = agent.topics.root
        health = ask(c, root, "health", '{"transaction": 17}')
        assert health["status"] == "ok" and health["transaction"] == 17
        assert health["data"]["healthy"] is True and health["data"]["mqtt_connected"] is True
        tasks = ask(c, root, "tasks", '{"transaction": "t-2"}')
        assert tasks["transaction"] == "t-2"
        by_name = {t["name"]: t for t in tasks["data"]["tasks"]}
        assert by_name["digits"]["kind"] == "model" and by_name["digits"]["edge_model"]
        assert by_name["air_quality"]["labels"] == ["good", "moderate", "poor"]
        c.publish_json("zigbee2mqtt/air-1", {"co2": 900})
        c.wait_on(agent.topics.device_result("air-1", "air_quality"), 1)
        devices = ask(c, root, "devices", "")  # an empty request is fine, as in Zigbee2MQTT
        assert "transaction" not in devices
        (air,) = devices["data"]["devices"]
        assert air["id"] == "air-1" and air["available"] is True and air["results"] == 1
        assert air["topic"] == "zigbee2mqtt/air-1" and air["windows"]["air_quality"]["length"] == 1


def test_bad_requests_get_error_answers(broker: Mosquitto, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker, [AIR])
    with running(path) as agent, Collector(broker, [f"{agent.topics.root}/#"]) as c:
        root = agent.topics.root
        unknown = ask(c, root, "permit_join", '{"value": true, "transaction": 5}')
        assert unknown["status"] == "error" and unknown["transaction"] == 5
        assert "unknown request" in unknown["error"] and unknown["data"] == {}
        broken = ask(c, root, "health", "{not json")
        assert broken["status"] == "error" and "invalid request" in broken["error"]
        assert c.wait_on(f"{root}/error", 1)[0]["code"] == "invalid_json"
        assert ask(c, root, "health", '"just a string"')["status"] == "ok"


def test_reload_adds_a_device_without_dropping_requests(broker: Mosquitto, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker, [AIR])
    with running(path) as agent, Collector(broker, ["#"]) as c:
        root = agent.topics.root
        with RequestClient(broker.host, broker.port, agent.config.id) as client:
            data = yaml.safe_load(path.read_text())
            data["devices"].append({"id": "air-2", "profile": "esphome", "tasks": ["air_quality"]})
            path.write_text(yaml.safe_dump(data))
            ids: list[str] = []

            def load() -> None:
                for i in range(150):
                    ids.append(client.send("digits", {"pixels": X_DIGITS[i % 50].tolist()}))
                    time.sleep(0.004)

            sender = threading.Thread(target=load)
            sender.start()
            time.sleep(0.1)
            reload = ask(c, root, "reload", '{"transaction": 99}')
            sender.join()
            assert reload["status"] == "ok", reload
            assert reload["transaction"] == 99
            assert reload["data"]["devices"] == ["air-1", "air-2"]
            assert client.wait_for(ids, 20), "every request answered across the reload"
            assert all(len(client.answers[i]) == 1 for i in ids)
        c.publish("air-2/sensor/co2/state", "1900")
        assert c.wait_on(agent.topics.device_result("air-2", "air_quality"), 1)[0]["ok"]
        node = f"homeassistant/device/edge_agent_{agent.config.id}_air-2/config"
        assert c.wait(lambda ms: any(m.topic == node and m.payload for m in ms), 5)


def test_reload_removes_a_device_and_refuses_a_broken_config(
    broker: Mosquitto, tmp_path: Path
) -> None:
    path = write_config(tmp_path, broker, [AIR, {**AIR, "id": "air-2", "topic": "zigbee2mqtt/two"}])
    with running(path) as agent, Collector(broker, ["#"]) as c:
        root = agent.topics.root
        node = f"homeassistant/device/edge_agent_{agent.config.id}_air-2/config"
        assert c.wait(lambda ms: any(m.topic == node and m.payload for m in ms), 10)
        data = yaml.safe_load(path.read_text())
        data["devices"] = [AIR]
        path.write_text(yaml.safe_dump(data))
        assert ask(c, root, "reload", "{}")["status"] == "ok"
        assert c.wait(lambda ms: [m.payload for m in ms if m.topic == node][-1:] == [b""], 5)
        assert [d["id"] for d in agent.device_list()] == ["air-1"]
        data["devices"] = [{**AIR, "profile": "no-such-profile"}]
        path.write_text(yaml.safe_dump(data))
        refused = ask(c, root, "reload", '{"transaction": 1}')
        assert refused["status"] == "error" and "no-such-profile" in refused["error"]
        assert [d["id"] for d in agent.device_list()] == ["air-1"]  # still serving the old one
        c.publish_json("zigbee2mqtt/air-1", {"co2": 450})
        assert c.wait_on(agent.topics.device_result("air-1", "air_quality"), 1)[-1]["ok"]
