"""Devices end to end in-process: real mosquitto, the real agent, real models. Sensor
payloads in their real formats in, results on `<base>/<id>/<device>/<task>`, garbage on
the error topic without touching other devices, availability."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from agent.devices.rules import RULES
from agent.devtools.broker import Mosquitto
from agent.devtools.client import RequestClient
from agent.registry import load_testset
from agent.simulate import digit_png
from tests.devices.devhelpers import MODELS, Collector, running, served_in_manifest, write_config

X_DIGITS, Y_DIGITS = load_testset(MODELS / "digits" / "testset.npz")
API_FIELDS = {"id", "task", "ok", "result", "source", "model", "model_version", "latency_ms"}

DEVICES = [
    {"id": "tablet-1", "profile": "tablet", "tasks": ["digits"]},
    {"id": "air-z2m", "profile": "zigbee2mqtt", "tasks": ["air_quality"]},
    {"id": "air-esp", "profile": "esphome", "tasks": ["air_quality"]},
]


def test_tablet_and_climate_devices_publish_results(broker: Mosquitto, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker, DEVICES)
    with running(path) as agent, Collector(broker, [f"{agent.topics.root}/#"]) as c:
        root = agent.topics.root
        n = 20
        for i in range(n):
            c.publish_json(
                "classroom/tablet-1/handwriting",
                {"ts": 1730800000 + i, "image": digit_png(X_DIGITS[i])},
            )
        c.publish_json("zigbee2mqtt/air-z2m", {"co2": 612, "temperature": 21.5, "linkquality": 90})
        c.publish_json("zigbee2mqtt/air-z2m", {"co2": 1480, "temperature": 22.0})
        c.publish("air-esp/sensor/co2/state", "2450")
        c.publish("air-esp/sensor/wifi_signal/state", "-61")  # a sensor no task uses
        digits = c.wait_on(f"{root}/tablet-1/digits", n)
        z2m = c.wait_on(f"{root}/air-z2m/air_quality", 2)
        esp = c.wait_on(f"{root}/air-esp/air_quality", 1)
        assert len(digits) == n
        for answer in digits:
            assert set(answer) >= API_FIELDS | {"device", "ts", "window"}
            assert answer["ok"] is True and answer["device"] == "tablet-1"
            assert answer["source"] == "edge"
        # Two workers may answer out of order, but results go out in the images' order.
        assert [a["ts"] for a in digits] == sorted(a["ts"] for a in digits)
        by_image = {int(a["ts"]) - 1730800000: a["result"]["label"] for a in digits}
        accuracy = sum(int(by_image[i]) == int(Y_DIGITS[i]) for i in range(n))
        assert accuracy / n >= 0.8
        assert [a["result"]["label"] for a in z2m] == ["good", "moderate"]
        assert esp[0]["result"]["label"] == "poor" and esp[0]["source"] == "rule"
        assert esp[0]["reading"] == {"co2": 2450.0}
        assert set(RULES["air_quality"].labels) == {"good", "moderate", "poor"}
        for device in ("tablet-1", "air-z2m", "air-esp"):
            states = [m.payload for m in c.on(f"{root}/{device}/availability")]
            assert states[0] == b"offline" and states[-1] == b"online"
        assert not c.on(f"{root}/error")


def test_garbage_gets_one_error_each_and_other_devices_carry_on(
    broker: Mosquitto, tmp_path: Path
) -> None:
    path = write_config(tmp_path, broker, DEVICES)
    with running(path) as agent, Collector(broker, [f"{agent.topics.root}/#"]) as c:
        root = agent.topics.root
        garbage = [
            ("zigbee2mqtt/air-z2m", b'{"co2": "612"}', "invalid_field"),  # string for a number
            ("zigbee2mqtt/air-z2m", b'{"battery": 90}', "no_known_fields"),  # wrong fields
            ("zigbee2mqtt/air-z2m", b"\xff\xfe garbage", "invalid_json"),
            ("air-esp/sensor/co2/state", b"NaN", "not_finite"),
            (
                "classroom/tablet-1/handwriting",
                b'{"ts": 1730800100, "image": "!!"}',
                "invalid_input",
            ),
            (
                "classroom/tablet-1/handwriting",
                b'{"ts": 1730800050, "image": "AAAA"}',
                "out_of_order",
            ),
        ]
        c.publish_json(
            "classroom/tablet-1/handwriting", {"ts": 1730800060, "image": digit_png(X_DIGITS[0])}
        )
        c.wait_on(f"{root}/tablet-1/digits", 1)
        for topic, payload, _ in garbage:
            c.publish(topic, payload)
            c.publish_json("zigbee2mqtt/air-z2m", {"co2": 700})  # a good device keeps going
        errors = c.wait_on(f"{root}/error", len(garbage))
        assert [e["code"] for e in errors] == [code for *_, code in garbage]
        for error, (topic, *_) in zip(errors, garbage, strict=True):
            assert set(error) == {"topic", "code", "message", "ts"} and error["topic"] == topic
        good = c.wait_on(f"{root}/air-z2m/air_quality", len(garbage))
        assert [g["result"]["label"] for g in good] == ["good"] * len(garbage)
        time.sleep(0.3)
        assert len(c.json_on(f"{root}/error")) == len(garbage)  # exactly one each
        counts = {d["id"]: d for d in agent.device_list()}
        assert counts["air-z2m"]["errors"] == 3 and counts["air-z2m"]["results"] == len(garbage)


def test_quiet_devices_become_unavailable_and_retained_states_are_ignored(
    broker: Mosquitto, tmp_path: Path
) -> None:
    devices = [
        {
            "id": "air-1",
            "profile": "zigbee2mqtt",
            "tasks": ["air_quality"],
            "unavailable_after_s": 1,
        }
    ]
    with Collector(broker, []) as pre:
        pre.publish_json("zigbee2mqtt/air-1", {"co2": 3000}, retain=True)  # an old state
        time.sleep(0.2)
    path = write_config(tmp_path, broker, devices)
    with running(path) as agent, Collector(broker, [f"{agent.topics.root}/#"]) as c:
        root = agent.topics.root
        time.sleep(0.5)
        assert not c.on(f"{root}/air-1/air_quality"), "a retained old state is not a reading"
        c.publish_json("zigbee2mqtt/air-1", {"co2": 650})
        assert c.wait_on(f"{root}/air-1/air_quality", 1)[0]["result"]["label"] == "good"
        availability = f"{root}/air-1/availability"
        assert c.wait(
            lambda ms: [m.payload for m in ms if m.topic == availability][-1:] == [b"offline"], 4
        )
        c.publish_json("zigbee2mqtt/air-1", {"co2": 660})
        assert c.wait(
            lambda ms: [m.payload for m in ms if m.topic == availability][-1:] == [b"online"], 4
        )


@pytest.mark.skipif(
    bool(served_in_manifest("activity")),
    reason="no activity model in models/manifest.json yet (models/train.py --task activity)",
)
def test_wearables_keep_separate_windows_under_garbage(broker: Mosquitto, tmp_path: Path) -> None:
    x, _ = load_testset(MODELS / "activity" / "testset.npz")
    devices = [
        {"id": f"wrist-{k}", "profile": "wearable_imu", "tasks": ["activity"]} for k in (1, 2)
    ]
    path = write_config(tmp_path, broker, devices, tasks=("activity",))
    with running(path) as agent, Collector(broker, [f"{agent.topics.root}/#"]) as c:
        root = agent.topics.root
        t0 = 1_730_800_000.0
        for j in range(0, 100, 10):
            batch = x[0][j : j + 10].astype(float)
            good = {
                "ts": t0 + j / 10,
                "rate_hz": 10,
                "accel": batch[:, :3].tolist(),
                "gyro": batch[:, 3:].tolist(),
            }
            c.publish_json("wearables/wrist-1/imu", good)
            c.publish_json("wearables/wrist-2/imu", {**good, "accel": [["x", 1, 2]] * 10})
            c.publish_json("wearables/wrist-2/imu", {**good, "gyro": good["gyro"][:5]})
        results = c.wait_on(f"{root}/wrist-1/activity", 1)
        assert len(results) == 1 and results[0]["window"]["samples"] == 100
        assert len(c.wait_on(f"{root}/error", 20)) == 20
        assert not c.on(f"{root}/wrist-2/activity")
        series = x[0].astype(float)
        with RequestClient(broker.host, broker.port, agent.config.id) as client:
            rid = client.send(
                "activity",
                {"accel": series[:, :3].tolist(), "gyro": series[:, 3:].tolist()},
                route="edge",
            )
            assert client.wait_for([rid], 10)
        # The window is the recording itself: the same scores as a request with it.
        assert results[0]["result"]["top"] == client.answers[rid][0]["result"]["top"]


@pytest.mark.skipif(
    bool(served_in_manifest("appliance")),
    reason="no appliance model in models/manifest.json yet (models/train.py --task appliance)",
)
def test_a_plugs_window_is_exactly_its_readings_whatever_another_plug_sends(
    broker: Mosquitto, tmp_path: Path
) -> None:
    x, _ = load_testset(MODELS / "appliance" / "testset.npz")
    devices = [
        {
            "id": f"plug-{k}",
            "profile": "shelly_gen2",
            "topic": f"plug-{k}/status/switch:0",
            "tasks": ["appliance"],
        }
        for k in (1, 2)
    ]
    path = write_config(tmp_path, broker, devices, tasks=("appliance",))
    garbage = [b'{"apower": "86"}', b"{oops", b'{"voltage": [1]}', b'{"apower": NaN}']
    with running(path) as agent, Collector(broker, [f"{agent.topics.root}/#"]) as c:
        for j, watts in enumerate(x[3]):
            c.publish_json("plug-1/status/switch:0", {"id": 0, "apower": float(watts)})
            c.publish("plug-2/status/switch:0", garbage[j % len(garbage)])
        (result,) = c.wait_on(f"{agent.topics.root}/plug-1/appliance", 1, timeout=15)
        with RequestClient(broker.host, broker.port, agent.config.id) as client:
            rid = client.send("appliance", {"power_w": x[3].astype(float).tolist()}, route="edge")
            assert client.wait_for([rid], 10)
            direct = client.answers[rid][0]
        # The window the device hub built is the trace itself: same scores as a request.
        assert result["result"]["top"] == direct["result"]["top"]
        assert len(c.wait_on(f"{agent.topics.root}/error", len(x[3]), timeout=15)) == len(x[3])
        assert not c.on(f"{agent.topics.root}/plug-2/appliance")


@pytest.mark.skipif(
    bool(served_in_manifest("appliance")),
    reason="no appliance model in models/manifest.json yet (models/train.py --task appliance)",
)
def test_a_tasmota_plug_classifies_a_held_out_trace(broker: Mosquitto, tmp_path: Path) -> None:
    x, _ = load_testset(MODELS / "appliance" / "testset.npz")
    devices = [{"id": "plug-1", "profile": "tasmota", "tasks": ["appliance"]}]
    path = write_config(tmp_path, broker, devices, tasks=("appliance",))
    with running(path) as agent, Collector(broker, [f"{agent.topics.root}/#"]) as c:
        t0 = 1_730_800_000
        for j, watts in enumerate(x[0]):
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t0 + 10 * j))
            c.publish(
                "tele/plug-1/SENSOR", orjson.dumps({"Time": ts, "ENERGY": {"Power": float(watts)}})
            )
        (result,) = c.wait_on(f"{agent.topics.root}/plug-1/appliance", 1, timeout=15)
        assert result["ok"] and result["window"]["samples"] == 1460
        assert result["window"]["end"] - result["window"]["start"] == pytest.approx(14590)
