"""The Prometheus endpoint: the only module that imports prometheus_client.

Off by default; `metrics.port` (or EDGE_AGENT_METRICS__PORT) turns it on, bound to localhost.
Everything is read from the agent's own counters at scrape time (a custom collector), so
the hot path pays nothing for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from agent.stats import LATENCY_BUCKETS_MS, Stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gauges:
    queue_depth: int
    inflight: int
    mqtt_connected: bool
    cloud_breaker: str | None  # closed / open / half_open, None without a cloud
    cloud_successes: int
    cloud_failures: int
    cloud_breaker_opened: int
    uptime_s: float


class AgentCollector(Collector):
    def __init__(self, stats: Stats, gauges: Callable[[], Gauges]) -> None:
        self._stats = stats
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        counters, errors, per_task = self._stats.counts()
        g = self._gauges()
        yield _counter(
            "edge_agent_messages_in",
            "MQTT messages received on request topics",
            counters.get("messages_in", 0),
        )
        yield _counter(
            "edge_agent_messages_out",
            "Answers and error messages published",
            counters.get("messages_out", 0),
        )
        errs = CounterMetricFamily("edge_agent_errors", "Inputs rejected, by code", labels=["code"])
        for code, n in sorted(errors.items()):
            errs.add_metric([code], n)
        yield errs
        answers = CounterMetricFamily(
            "edge_agent_answers", "Successful answers by task and source", labels=["task", "source"]
        )
        degraded = CounterMetricFamily(
            "edge_agent_degraded_answers",
            "Answers from the device because the cloud failed",
            labels=["task"],
        )
        failed = CounterMetricFamily(
            "edge_agent_failed_requests", "Requests answered ok=false", labels=["task"]
        )
        for task, c in sorted(per_task.items()):
            for source in ("edge", "cloud"):
                answers.add_metric([task, source], c.get(source, 0))
            degraded.add_metric([task], c.get("degraded", 0))
            failed.add_metric([task], c.get("failed", 0))
        yield answers
        yield degraded
        yield failed
        latency = HistogramMetricFamily(
            "edge_agent_latency_seconds",
            "Time from request received to answer published",
            labels=["task"],
        )
        for task, (cumulative, total_ms) in sorted(self._stats.histograms().items()):
            bounds = [f"{b / 1000:g}" for b in LATENCY_BUCKETS_MS] + ["+Inf"]
            latency.add_metric(
                [task], list(zip(bounds, cumulative, strict=True)), sum_value=total_ms / 1000
            )
        yield latency
        yield _gauge("edge_agent_queue_depth", "Requests waiting for a worker", g.queue_depth)
        yield _gauge("edge_agent_inflight", "Requests accepted and not yet answered", g.inflight)
        yield _gauge(
            "edge_agent_mqtt_connected", "1 when connected to the broker", int(g.mqtt_connected)
        )
        yield _gauge("edge_agent_uptime_seconds", "Seconds since start", g.uptime_s)
        cloud = CounterMetricFamily(
            "edge_agent_cloud_requests", "Cloud inference calls by outcome", labels=["outcome"]
        )
        cloud.add_metric(["success"], g.cloud_successes)
        cloud.add_metric(["failure"], g.cloud_failures)
        yield cloud
        yield _counter(
            "edge_agent_cloud_breaker_opened",
            "Times the circuit breaker opened",
            g.cloud_breaker_opened,
        )
        state = GaugeMetricFamily(
            "edge_agent_cloud_breaker_state", "1 for the breaker's current state", labels=["state"]
        )
        for name in ("closed", "open", "half_open"):
            state.add_metric([name], int(g.cloud_breaker == name))
        yield state


def _counter(name: str, doc: str, value: float) -> Metric:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> Metric:
    return GaugeMetricFamily(name, doc, value=value)


def serve_metrics(host: str, port: int, stats: Stats, gauges: Callable[[], Gauges]) -> Any:
    """Start the endpoint on a daemon thread. Returns the server (call .shutdown())."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(stats, gauges))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
    return server
