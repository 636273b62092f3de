"""Small helpers shared by tests."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.app import Agent
from agent.config import Config, load_config
from agent.devtools.broker import Mosquitto

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
