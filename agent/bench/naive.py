"""The naive baseline agent: what most tutorials write.

One MQTT callback that, on the network thread and one message at a time, parses the JSON,
validates the input, runs the model with batch 1 and publishes the answer. Same broker,
topics, protocol, QoS, models and input validation as the real agent; what it lacks is
what the agent adds: hand-off to worker threads, micro-batching and a lean hot path.

It is a benchmark baseline, not a way to serve: no deadlines, no cloud, no error topic.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agent.config import LimitsConfig, MqttConfig
from agent.mqtt.client import Message, MqttClient
from agent.registry import LoadedModel, Registry
from agent.service.notify import Notifier
from agent.tasks import TASKS


class NaiveAgent:
    def __init__(
        self, host: str, port: int, agent_id: str, models_dir: Path, tasks: list[str], qos: int
    ) -> None:
        self.root = f"edge-agent/{agent_id}"
        self.qos = qos
        self.limits = LimitsConfig()  # type: ignore[call-arg]
        self.models = load_models(models_dir, tasks)
        self.mqtt = MqttClient(
            MqttConfig.model_validate({"host": host, "port": port, "session_expiry_s": 0}),
            f"naive-{agent_id}",
            will=None,
            subscriptions=[(f"{self.root}/request/+", qos)],
            on_message=self.on_message,
            manual_ack=False,
        )

    def on_message(self, message: Message) -> None:
        topic, body = answer(self.models, self.limits, self.root, message.topic, message.payload)
        self.mqtt.publish(topic, body, qos=self.qos)


def load_models(models_dir: Path, tasks: list[str]) -> dict[str, LoadedModel]:
    registry = Registry(models_dir)
    models: dict[str, LoadedModel] = {}
    for name in tasks:
        spec = registry.task(name).edge
        if spec is not None:
            models[name] = spec.load(1)
    return models


def answer(
    models: dict[str, LoadedModel],
    limits: LimitsConfig,
    root: str,
    topic: str,
    payload: bytes | bytearray,
) -> tuple[str, bytes]:
    """What a tutorial's callback does with one request: parse, validate, invoke with batch
    1, build the answer. Returns the answer's topic and payload."""
    task = topic.rsplit("/", 1)[-1]
    body = json.loads(payload)
    model = models[task]
    x = TASKS[task].parse_input(body["input"], limits)
    probs = model.predict(x[np.newaxis])[0]
    best = int(np.argmax(probs))
    result = {
        "id": body["id"],
        "task": task,
        "ok": True,
        "result": {"label": model.spec.labels[best], "score": float(probs[best])},
    }
    return f"{root}/response/{task}", json.dumps(result).encode()


def parse_args(prog: str, description: str | None, argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--models", required=True)
    p.add_argument("--task", action="append", required=True, help="a task to serve")
    p.add_argument("--qos", type=int, choices=[0, 1], default=1)
    return p.parse_args(argv)


def serve(name: str, start: Callable[[], bool], stop: Callable[[], None]) -> int:
    """A baseline's life: `start` (True once it serves), READY=1, then serve until SIGTERM
    or SIGINT, then `stop`."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    if not start():
        print("cannot connect to the broker", file=sys.stderr)
        return 1
    Notifier().ready(f"{name} agent serving")
    stopping.wait()
    stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args("python -m agent.bench.naive", __doc__, argv)
    agent = NaiveAgent(args.host, args.port, args.id, Path(args.models), args.task, args.qos)

    def start() -> bool:
        agent.mqtt.start()
        if not agent.mqtt.wait_connected(10):
            return False
        time.sleep(0.1)  # SUBACK
        return True

    return serve("naive", start, lambda: agent.mqtt.stop(timeout=1.0))


if __name__ == "__main__":
    sys.exit(main())
