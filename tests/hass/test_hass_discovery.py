"""Home Assistant MQTT discovery against a real mosquitto and the real agent: every
retained config checked against the documented schema (tests/hass/hass_schema.py), the
templates rendered with Jinja2 as Home Assistant does, re-announcement on Home Assistant's
birth message, and removal of stale entities."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jinja2
import pytest

from agent.config import load_config
from agent.devtools.broker import Mosquitto
from agent.registry import load_testset
from agent.simulate import digit_png
from tests.devices.devhelpers import MODELS, Collector, running, write_config
from tests.hass.hass_schema import check_config

X_DIGITS, _ = load_testset(MODELS / "digits" / "testset.npz")
DEVICES = [
    {"id": "tablet-1", "profile": "tablet", "tasks": ["digits"], "area": "Room 12"},
    {"id": "air-z2m", "profile": "zigbee2mqtt", "tasks": ["air_quality"]},
    {"id": "air-esp", "profile": "esphome", "tasks": ["air_quality"]},
]
PREFIX = "homeassistant"


def retained_configs(broker: Mosquitto, prefix: str = PREFIX) -> dict[str, Any]:
    """What Home Assistant would receive on subscribing: the retained configs."""
    with Collector(broker, [f"{prefix}/#"]) as c:
        time.sleep(0.5)
        return {m.topic: json.loads(m.payload) for m in c.messages if m.retain and m.payload}


def wait_announced(
    broker: Mosquitto, count: int, timeout: float = 10.0, prefix: str = PREFIX
) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        configs = retained_configs(broker, prefix)
        if len(configs) >= count or time.monotonic() > end:
            return configs


def render(template: str, value: bytes) -> str:
    """Render an MQTT template the way Home Assistant does: `value` and `value_json`."""
    text = value.decode()
    try:
        value_json = json.loads(text)
    except ValueError:
        value_json = None
    return jinja2.Environment().from_string(template).render(value=text, value_json=value_json)


def test_every_config_follows_the_documented_schema(broker: Mosquitto, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker, DEVICES)
    with running(path) as agent:
        node = f"edge_agent_{agent.config.id}"
        configs = wait_announced(broker, 1 + len(DEVICES))
        expected = {f"{PREFIX}/device/{node}/config"} | {
            f"{PREFIX}/device/{node}_{d['id']}/config" for d in DEVICES
        }
        assert set(configs) == expected
        unique_ids: list[str] = []
        for topic, payload in configs.items():
            unique_ids += check_config(topic, payload, PREFIX)
        assert len(unique_ids) == len(set(unique_ids)), "unique_id must be unique"
        for d in DEVICES:
            config = configs[f"{PREFIX}/device/{node}_{d['id']}/config"]
            assert config["dev"]["via_device"] == node and config["o"]["name"] == "edge-agent"
            assert {a["t"] for a in config["avty"]} == {
                agent.topics.status,
                agent.topics.device_availability(d["id"]),
            }
            for task in d["tasks"]:
                sensor = config["cmps"][task]
                assert sensor["p"] == "sensor" and sensor["dev_cla"] == "enum"
                assert sensor["stat_t"] == agent.topics.device_result(d["id"], task)
        tablet = configs[f"{PREFIX}/device/{node}_tablet-1/config"]
        assert tablet["cmps"]["digits"]["ops"] == [str(i) for i in range(10)]
        assert tablet["dev"]["sa"] == "Room 12"
        air = configs[f"{PREFIX}/device/{node}_air-z2m/config"]
        assert air["cmps"]["air_quality_ventilation"]["p"] == "binary_sensor"
        diagnostics = configs[f"{PREFIX}/device/{node}/config"]["cmps"]
        assert diagnostics and all(c["ent_cat"] == "diagnostic" for c in diagnostics.values())


def test_templates_render_real_results_like_home_assistant(
    broker: Mosquitto, tmp_path: Path
) -> None:
    path = write_config(tmp_path, broker, DEVICES)
    with running(path) as agent, Collector(broker, [f"{agent.topics.root}/#"]) as c:
        node = f"edge_agent_{agent.config.id}"
        configs = wait_announced(broker, 1 + len(DEVICES))
        c.publish_json(
            "classroom/tablet-1/handwriting", {"ts": 1730800000, "image": digit_png(X_DIGITS[0])}
        )
        c.publish_json("zigbee2mqtt/air-z2m", {"co2": 1480})
        c.publish_json("zigbee2mqtt/air-z2m", {"co2": 600})
        c.wait_on(agent.topics.device_result("tablet-1", "digits"), 1)
        c.wait_on(agent.topics.device_result("air-z2m", "air_quality"), 2)
        (digit,) = c.on(agent.topics.device_result("tablet-1", "digits"))
        sensor = configs[f"{PREFIX}/device/{node}_tablet-1/config"]["cmps"]["digits"]
        label = render(sensor["val_tpl"], digit.payload)
        assert label == json.loads(digit.payload)["result"]["label"] and label in sensor["ops"]
        attributes = json.loads(render(sensor["json_attr_tpl"], digit.payload))
        assert {"score", "source", "latency_ms"} <= set(attributes)
        assert attributes["source"] == "edge"
        binary = configs[f"{PREFIX}/device/{node}_air-z2m/config"]["cmps"][
            "air_quality_ventilation"
        ]
        states = [
            render(binary["val_tpl"], m.payload)
            for m in c.on(agent.topics.device_result("air-z2m", "air_quality"))
        ]
        assert states == ["ON", "OFF"]  # 1480 ppm: ventilate; 600 ppm: fine
        availability = configs[f"{PREFIX}/device/{node}/config"]["avty"][0]["val_tpl"]
        assert [render(availability, v) for v in (b"online", b"offline", b"stopped")] == [
            "online",
            "offline",
            "offline",
        ]
        stats = json.dumps(agent.stats_snapshot()).encode()
        for component in configs[f"{PREFIX}/device/{node}/config"]["cmps"].values():
            assert float(render(component["val_tpl"], stats)) >= 0


def test_home_assistant_online_republishes_every_config_within_5s(
    broker: Mosquitto, tmp_path: Path
) -> None:
    path = write_config(tmp_path, broker, DEVICES)
    with running(path), Collector(broker, [f"{PREFIX}/#"]) as c:
        wanted = set(wait_announced(broker, 1 + len(DEVICES)))
        for _ in range(2):  # Home Assistant restarting, twice
            start = len(c.messages)
            began = time.monotonic()
            c.publish(f"{PREFIX}/status", "online")
            assert c.wait(lambda ms, start=start: wanted <= {m.topic for m in ms[start:]}, 5.0)
            assert time.monotonic() - began < 5.0
        start = len(c.messages)
        c.publish(f"{PREFIX}/status", "offline")  # Home Assistant's last will: nothing to do
        time.sleep(1.5)
        assert not wanted & {m.topic for m in c.messages[start:]}


def test_stale_entities_and_components_are_removed(broker: Mosquitto, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker, DEVICES)
    agent_id = load_config(path, environ={}).id
    node, root = f"edge_agent_{agent_id}", f"edge-agent/{agent_id}"
    gone = {
        "dev": {"ids": [f"{node}_gone"], "name": "Gone", "via_device": node},
        "o": {"name": "edge-agent", "sw": "0.0.1"},
        "avty": [{"t": f"{root}/status"}, {"t": f"{root}/gone/availability"}],
        "cmps": {
            "digits": {
                "p": "sensor",
                "uniq_id": f"{node}_gone_digits",
                "stat_t": f"{root}/gone/digits",
            }
        },
    }
    grown = {
        "dev": {"ids": [f"{node}_air-z2m"], "name": "Air", "via_device": node},
        "o": {"name": "edge-agent", "sw": "0.0.1"},
        "cmps": {
            "air_quality": {
                "p": "sensor",
                "uniq_id": f"{node}_air-z2m_air_quality",
                "stat_t": f"{root}/air-z2m/air_quality",
            },
            "digits": {
                "p": "sensor",
                "uniq_id": f"{node}_air-z2m_digits",
                "stat_t": f"{root}/air-z2m/digits",
            },
        },
    }
    foreign = {
        "dev": {"ids": ["zigbee2mqtt_0x00158d0001"]},
        "o": {"name": "Zigbee2MQTT"},
        "cmps": {},
    }
    other_agent = {**gone, "dev": {"ids": ["edge_agent_other_x"], "via_device": "edge_agent_other"}}
    with Collector(broker, []) as pre:
        pre.publish_json(f"{PREFIX}/device/{node}_gone/config", gone, retain=True)
        pre.publish(f"{root}/gone/digits", b'{"ok": true}', retain=True)
        pre.publish(f"{root}/gone/availability", b"online", retain=True)
        pre.publish_json(f"{PREFIX}/device/{node}_air-z2m/config", grown, retain=True)
        pre.publish(f"{root}/air-z2m/digits", b'{"ok": true}', retain=True)
        pre.publish_json(f"{PREFIX}/device/zigbee2mqtt_0x00158d0001/config", foreign, retain=True)
        pre.publish_json(f"{PREFIX}/device/edge_agent_other_x/config", other_agent, retain=True)
        time.sleep(0.3)
    with Collector(broker, [f"{PREFIX}/#"]) as live, running(path):
        air_topic = f"{PREFIX}/device/{node}_air-z2m/config"
        assert live.wait(lambda ms: sum(m.topic == air_topic and not m.retain for m in ms) >= 2, 10)
        time.sleep(0.5)
        air_updates = [json.loads(m.payload) for m in live.on(air_topic) if not m.retain]
        assert any(u["cmps"].get("digits") == {"p": "sensor"} for u in air_updates), (
            "the documented removal of one component: the component with only its platform"
        )
        configs = retained_configs(broker)
        assert f"{PREFIX}/device/{node}_gone/config" not in configs
        assert f"{PREFIX}/device/zigbee2mqtt_0x00158d0001/config" in configs
        assert f"{PREFIX}/device/edge_agent_other_x/config" in configs
        assert set(configs[air_topic]["cmps"]) == {"air_quality", "air_quality_ventilation"}
        with Collector(broker, [f"{root}/#"]) as states:
            time.sleep(0.5)
            left = {m.topic for m in states.messages if m.retain and m.payload}
        assert not left & {
            f"{root}/gone/digits",
            f"{root}/gone/availability",
            f"{root}/air-z2m/digits",
        }


@pytest.mark.parametrize("setting", [{"enabled": False}, {"discovery_prefix": "ha-test"}])
def test_discovery_can_be_turned_off_or_moved(
    broker: Mosquitto, tmp_path: Path, setting: dict[str, Any]
) -> None:
    path = write_config(tmp_path, broker, DEVICES, homeassistant=setting)
    with running(path) as agent, Collector(broker, [f"{agent.topics.root}/#"]) as c:
        c.publish_json("zigbee2mqtt/air-z2m", {"co2": 640})
        assert c.wait_on(agent.topics.device_result("air-z2m", "air_quality"), 1)
        if setting.get("discovery_prefix"):
            moved = wait_announced(broker, 1 + len(DEVICES), prefix="ha-test")
            assert len(moved) == 1 + len(DEVICES)
            for topic, payload in moved.items():
                check_config(topic, payload, "ha-test")
        assert retained_configs(broker) == {}
