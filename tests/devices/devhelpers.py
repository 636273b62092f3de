"""Helpers for the device and Home Assistant tests: a config file with devices, the agent
in-process, and an MQTT client that records every message with its retain flag."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import yaml

from agent.app import Agent
from agent.config import MqttConfig, load_config
from agent.devtools.broker import Mosquitto
from agent.mqtt.client import Message, MqttClient
from agent.registry import Registry

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
PROFILES = REPO / "devices" / "profiles"
EXAMPLE = REPO / "devices" / "example.yaml"


def served_in_manifest(*tasks: str) -> list[str]:
    """The tasks of `tasks` that have no models in models/manifest.json."""
    known = Registry(MODELS).manifest.tasks
    return [t for t in tasks if t not in known]


def write_config(
    directory: Path,
    broker: Mosquitto,
    devices: list[dict[str, Any]],
    tasks: tuple[str, ...] = ("digits",),
    **extra: Any,
) -> Path:
    data: dict[str, Any] = {
        "id": f"t{uuid.uuid4().hex[:8]}",
        "mqtt": {"host": broker.host, "port": broker.port},
        "models": {"dir": str(MODELS)},
        "device_profiles": str(PROFILES),
        "stats": {"interval_s": 1},
        "tasks": {t: {} for t in tasks},
        "devices": devices,
    }
    data.update(extra)
    path = directory / f"agent-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def running(path: Path) -> Iterator[Agent]:
    agent = Agent(load_config(path, environ={}), config_path=path)
    agent.start(connect_timeout=10)
    try:
        yield agent
    finally:
        agent.shutdown()


class Collector:
    """Subscribes to `filters` and keeps every message (topic, payload, retain)."""

    def __init__(self, broker: Mosquitto, filters: list[str]) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._mqtt = MqttClient(
            MqttConfig(host=broker.host, port=broker.port, session_expiry_s=0),  # type: ignore[call-arg]
            f"test-collector-{uuid.uuid4().hex[:8]}",
            will=None,
            subscriptions=[(f, 1) for f in filters],
            on_message=self._on_message,
            manual_ack=False,
        )

    def __enter__(self) -> Collector:
        self._mqtt.start()
        assert self._mqtt.wait_connected(10)
        time.sleep(0.3)  # SUBACK before anything is published
        return self

    def __exit__(self, *exc: object) -> None:
        self._mqtt.stop()

    def _on_message(self, message: Message) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self._mqtt.publish(topic, data, qos=1, retain=retain)

    def publish_json(self, topic: str, obj: Any, retain: bool = False) -> None:
        self.publish(topic, orjson.dumps(obj), retain=retain)

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def json_on(self, topic: str) -> list[Any]:
        return [json.loads(m.payload) for m in self.on(topic) if m.payload]

    def wait(self, done: Callable[[list[Message]], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cond:
            while not done(self.messages):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait_on(self, topic: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        self.wait(
            lambda ms: sum(m.topic == topic and bool(m.payload) for m in ms) >= count, timeout
        )
        return self.json_on(topic)
