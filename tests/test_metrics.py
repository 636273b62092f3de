"""The Prometheus endpoint after a run of requests (issue 5: observability)."""

from __future__ import annotations

import httpx

from agent.devtools.broker import Mosquitto, free_port
from agent.devtools.client import RequestClient
from agent.registry import load_testset
from tests.conftest import MODELS
from tests.helpers import agent_config, running_agent

X_TEST, _ = load_testset(MODELS / "digits" / "testset.npz")


def test_metrics_endpoint_shows_the_run(broker: Mosquitto, cloud_url: str) -> None:
    port = free_port()
    config = agent_config(broker, cloud_url, EDGE_AGENT_METRICS__PORT=str(port))
    with running_agent(config), RequestClient(broker.host, broker.port, config.id) as c:
        ids = [c.send("digits", {"pixels": X_TEST[i].tolist()}) for i in range(40)]
        ids.append(c.send("digits", {"pixels": X_TEST[0].tolist()}, route="cloud"))
        c.publish_raw(f"edge-agent/{config.id}/request/digits", b"garbage")
        assert c.wait_for(ids, 15)
        c.wait_messages("/error", 1, 5)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["edge_agent_messages_in_total"] == 42
    assert samples['edge_agent_errors_total{code="invalid_json"}'] == 1
    edge = samples['edge_agent_answers_total{source="edge",task="digits"}']
    cloud = samples['edge_agent_answers_total{source="cloud",task="digits"}']
    assert edge + cloud == 41 and cloud >= 1
    assert samples['edge_agent_latency_seconds_count{task="digits"}'] == 41
    assert samples['edge_agent_latency_seconds_bucket{le="+Inf",task="digits"}'] == 41
    assert samples['edge_agent_cloud_breaker_state{state="closed"}'] == 1
    assert samples["edge_agent_queue_depth"] == 0
    assert samples["edge_agent_mqtt_connected"] == 1
    assert samples['edge_agent_cloud_requests_total{outcome="success"}'] >= 1


def test_metrics_are_off_by_default_and_bound_to_localhost() -> None:
    from agent.config import load_config

    config = load_config(None, environ={})
    assert config.metrics.port is None and config.metrics.host == "127.0.0.1"
