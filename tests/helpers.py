"""Small helpers shared by tests."""

from __future__ import annotations

import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.app import Agent
from agent.config import Config, load_config
from agent.devtools.broker import Mosquitto
from agent.mqtt.client import Message

REPO = Path(__file__).resolve().parents[1]
DEPLOY_CONFIG = REPO / "deploy" / "agent.yaml"


def agent_config(broker: Mosquitto, cloud_url: str | None, **env: str) -> Config:
    environ = {
        "EDGE_AGENT_ID": f"t{uuid.uuid4().hex[:8]}",
        "EDGE_AGENT_MQTT__HOST": broker.host,
        "EDGE_AGENT_MQTT__PORT": str(broker.port),
        "EDGE_AGENT_STATS__INTERVAL_S": "1",
        # outbox and de-duplication state: private to the test, not ./state
        "EDGE_AGENT_STATE_DIR": tempfile.mkdtemp(prefix="edge-agent-state-"),
    }
    if cloud_url is not None:
        environ["EDGE_AGENT_CLOUD__URL"] = cloud_url
    environ.update(env)
    config = load_config(DEPLOY_CONFIG, environ=environ)
    if cloud_url is None:
        config = config.model_copy(update={"cloud": config.cloud.model_copy(update={"url": None})})
    return config


@contextmanager
def running_agent(config: Config) -> Iterator[Agent]:
    agent = Agent(config)
    agent.start(connect_timeout=10)
    try:
        yield agent
    finally:
        agent.shutdown()


class RecordingPublisher:
    """The engine's publisher without a broker: records what is published (topic, payload,
    QoS) and checks every topic. Delivery callbacks run at once, or with `hold=True` only
    when `deliver_all` is called (a broker that does not acknowledge our answers yet)."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.lock = threading.Lock()
        self.acks: Counter[int] = Counter()
        self.published: list[tuple[str, bytes, int]] = []
        self.pending: list[Callable[[], None]] = []

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> bool:
        assert 0 < len(topic) <= 65535 and not set(topic) & set("+#\x00"), topic
        with self.lock:
            self.published.append((topic, payload, qos))
            if on_delivered is not None and self.hold:
                self.pending.append(on_delivered)
                return True
        if on_delivered is not None:
            on_delivered()
        return True

    def ack(self, message: Message) -> None:
        with self.lock:
            self.acks[message.mid] += 1

    def deliver_all(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for callback in pending:
            callback()
