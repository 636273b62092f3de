"""`edge-agent simulate` against the agent: every simulated device produces results, and the
acceptance run from a fresh clone (the example config, the daemon and the simulator as
subprocesses)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.config import load_config
from agent.devtools.broker import Mosquitto
from agent.devtools.procs import agent_env, python_argv, start_agent
from agent.errors import ConfigError
from agent.simulate import Options, SimulationError, run
from tests.devices.devhelpers import EXAMPLE, Collector, running, served_in_manifest, write_config

DEVICES = [
    {"id": "tablet-1", "profile": "tablet", "tasks": ["digits"]},
    {"id": "air-z2m", "profile": "zigbee2mqtt", "tasks": ["air_quality"]},
    {"id": "air-esp", "profile": "esphome", "tasks": ["air_quality"]},
]


def test_simulated_tablet_and_climate_devices_get_results(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, broker, DEVICES)
    with running(path) as agent, Collector(broker, [f"{agent.topics.root}/#"]) as c:
        sent = run(agent.config, Options(event_interval_s=0.1, count=5))
        assert sent == 5 + 5 + 5 * 3  # ESPHome: one topic per sensor (co2, temperature, humidity)
        for d in DEVICES:
            results = c.wait_on(agent.topics.device_result(d["id"], d["tasks"][0]), 5)
            assert len(results) == 5 and all(r["ok"] for r in results), d["id"]
        assert not c.on(f"{agent.topics.root}/error")
    out = capsys.readouterr().out
    assert "tablet-1: tablet on classroom/tablet-1/handwriting" in out
    assert "digit " in out and "lesson starts" in out


def test_simulator_stops_when_told_and_refuses_unknown_devices(
    broker: Mosquitto, tmp_path: Path
) -> None:
    config = load_config(write_config(tmp_path, broker, DEVICES), environ={})
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    began = time.monotonic()
    run(config, Options(event_interval_s=10.0), stop)  # would run forever
    assert time.monotonic() - began < 3
    with pytest.raises(SimulationError, match="no such device"):
        run(config, Options(devices=("nope",), count=1))


def _example_or_skip() -> None:
    missing = served_in_manifest("appliance", "activity")
    if missing:
        pytest.skip(f"devices/example.yaml needs the {missing} model(s): models/train.py")
    try:
        load_config(EXAMPLE, environ={})
    except ConfigError as exc:
        pytest.skip(f"devices/example.yaml does not load yet: {exc}")


def test_acceptance_example_config_and_simulator_from_a_fresh_clone(
    broker: Mosquitto, tmp_path: Path
) -> None:
    _example_or_skip()
    example = load_config(EXAMPLE, environ={})
    agent_id = f"accept{int(time.time()) % 100000}"
    env = agent_env(broker.port, agent_id, None)
    agent = start_agent(EXAMPLE, env, tmp_path)
    root = f"edge-agent/{agent_id}"
    try:
        with Collector(broker, [f"{root}/#", "homeassistant/#"]) as c:
            assert c.wait(lambda ms: any(m.topic == f"{root}/status" for m in ms), 15), (
                agent.output()
            )
            sim = subprocess.run(
                python_argv(
                    "simulate",
                    "-c",
                    str(EXAMPLE),
                    "--count",
                    "1",
                    "--window-s",
                    "3",
                    "--event-interval",
                    "0.5",
                ),
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert sim.returncode == 0, sim.stderr
            for device in example.devices:
                for task in device.tasks:
                    results = c.wait_on(f"{root}/{device.id}/{task}", 1, timeout=10)
                    assert results and results[0]["ok"], (device.id, agent.output()[-3000:])
            configs = {
                m.topic
                for m in c.messages
                if m.topic.startswith("homeassistant/device/") and m.payload
            }
            assert len(configs) == 1 + len(example.devices)
    finally:
        agent.stop()
