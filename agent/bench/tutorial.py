"""The tutorial baseline: the MQTT inference service most tutorials write, with plain paho.

A paho `Client` started with `loop_start()`, and one `on_message` callback that parses the
JSON, validates the input, runs the model with batch 1 and publishes the answer with QoS 1,
one message at a time on paho's network thread, with paho's defaults (automatic
acknowledgement, 20 QoS 1 messages in flight, its own socket reads and writes). This is the
"naive agent" of the benchmark goals. `agent/bench/naive.py` is a stricter variant of the
same loop on the agent's own MQTT client (buffered reads, lean publish).

Same broker, topics, MQTT 5, QoS, models and input validation as the agent. It is a
benchmark baseline, not a way to serve: no deadlines, no cloud, no error topic. It imports
paho directly (everywhere else only `agent/mqtt/client.py` does), because that is the point.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.bench.naive import answer, load_models, parse_args, serve
from agent.config import LimitsConfig


class TutorialAgent:
    def __init__(
        self, host: str, port: int, agent_id: str, models_dir: Path, tasks: list[str], qos: int
    ) -> None:
        self.root = f"edge-agent/{agent_id}"
        self.qos = qos
        self.limits = LimitsConfig()  # type: ignore[call-arg]
        self.models = load_models(models_dir, tasks)
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"tutorial-{agent_id}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = self.on_connect
        self.client.on_subscribe = self.on_subscribe
        self.client.on_message = self.on_message
        self.client.connect(host, port)

    def on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        client.subscribe(f"{self.root}/request/+", qos=self.qos)

    def on_subscribe(self, client: mqtt.Client, *args: Any) -> None:
        self.subscribed.set()

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic, body = answer(self.models, self.limits, self.root, msg.topic, msg.payload)
        client.publish(topic, body, qos=self.qos)


def main(argv: list[str] | None = None) -> int:
    args = parse_args("python -m agent.bench.tutorial", __doc__, argv)
    agent = TutorialAgent(args.host, args.port, args.id, Path(args.models), args.task, args.qos)

    def start() -> bool:
        agent.client.loop_start()
        return agent.subscribed.wait(10)

    def stop() -> None:
        agent.client.disconnect()
        agent.client.loop_stop()

    return serve("tutorial", start, stop)


if __name__ == "__main__":
    sys.exit(main())
