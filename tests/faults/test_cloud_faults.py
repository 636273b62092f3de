"""The cloud fails: killed mid-stream, slow, answering 500 or 429 with Retry-After. Every
request is answered within its deadline, and answers the device gives on its own (source
edge, not degraded) stay as fast as without the fault: a dead or slow cloud never slows
local answers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.devtools.broker import Mosquitto
from agent.devtools.procs import start_cloud
from tests.faults.harness import (
    MODELS,
    AgentProcess,
    FaultyCloud,
    Figures,
    LoadClient,
    report,
    size,
)

DEADLINE_MS = 1000


def _local_p99(client: LoadClient, ids: list[str]) -> float:
    """p99 latency of the answers the device gave alone (never waited for the cloud)."""
    lat = [
        (client.answers[i][0][0] - client.sent_at[i]) * 1000.0
        for i in ids
        if i in client.answers
        and client.answers[i][0][1].get("source") == "edge"
        and not client.answers[i][0][1].get("degraded")
    ]
    return float(np.percentile(lat, 99)) if lat else 0.0


def _run(
    client: LoadClient, rate: float, duration: float, during: Any = None
) -> tuple[list[str], float]:
    sender, ids = client.stream(rate, duration, deadline_ms=DEADLINE_MS)
    if during is not None:
        time.sleep(duration / 3)
        during()
    sender.join()
    client.wait_answered(ids, 30)
    time.sleep(0.5)  # late duplicates, if any, arrive
    return ids, _local_p99(client, ids)


def _late(client: LoadClient, ids: list[str]) -> int:
    return sum(
        1
        for i in ids
        if i in client.answers
        and (client.answers[i][0][0] - client.sent_at[i]) * 1000.0 > DEADLINE_MS
    )


def _check(figures: Figures, client: LoadClient, ids: list[str]) -> None:
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert _late(client, ids) == 0, "every answer within its deadline"
    assert all(a["ok"] for a in client.first_answers(ids))


def test_cloud_killed_during_a_stream(tmp_path: Path) -> None:
    rate = size(100, 200)
    duration = size(6.0, 20.0)
    cloud, url = start_cloud(MODELS, tmp_path / "cloud")
    try:
        with Mosquitto() as broker:
            agent = AgentProcess(broker.port, url, tmp_path)
            with LoadClient(broker.host, broker.port, agent.agent_id) as client:
                since = time.monotonic()
                agent.start()
                assert client.wait_status(b"online", since, 30), agent.output()
                try:
                    client.stream(50, 1.0)[0].join()  # warm up
                    base_ids, base_p99 = _run(client, rate, duration)
                    ids, p99 = _run(client, rate, duration, during=cloud.kill)
                    degraded = sum(1 for a in client.first_answers(ids) if a["degraded"])
                    figures = report(
                        client.figures(
                            f"cloud SIGKILLed mid-stream @ {rate:.0f} req/s",
                            ids,
                            local_p99_ms=round(p99, 2),
                            local_p99_no_fault_ms=round(base_p99, 2),
                            degraded=degraded,
                            late=_late(client, ids),
                        )
                    )
                    _check(figures, client, ids)
                    assert _late(client, base_ids) == 0
                    assert degraded > 0, "requests that wanted the cloud were degraded"
                    # 2x, with 2 ms of slack for scheduler noise at these small figures
                    assert p99 <= 2 * base_p99 + 2.0, (p99, base_p99)
                finally:
                    agent.stop()
    finally:
        cloud.kill()


@pytest.mark.parametrize(
    "fault",
    ["slow", "500", "429"],
)
def test_cloud_slow_or_failing(tmp_path: Path, cloud_url: str, fault: str) -> None:
    rate = size(100, 200)
    duration = size(5.0, 15.0)
    with Mosquitto() as broker, FaultyCloud(cloud_url) as front:
        agent = AgentProcess(broker.port, front.url, tmp_path)
        with LoadClient(broker.host, broker.port, agent.agent_id) as client:
            since = time.monotonic()
            agent.start()
            assert client.wait_status(b"online", since, 30), agent.output()
            try:
                client.stream(50, 1.0)[0].join()
                _, base_p99 = _run(client, rate, duration)
                if fault == "slow":
                    front.mode, front.delay_s = "slow", 3.0
                else:
                    front.mode, front.status = "status", int(fault)
                    front.retry_after = "2" if fault == "429" else None
                before = front.requests
                ids, p99 = _run(client, rate, duration)
                wanted = sum(1 for a in client.first_answers(ids) if a["degraded"])
                figures = report(
                    client.figures(
                        f"cloud {'slow (3 s)' if fault == 'slow' else 'answering ' + fault}"
                        f" @ {rate:.0f} req/s",
                        ids,
                        local_p99_ms=round(p99, 2),
                        local_p99_no_fault_ms=round(base_p99, 2),
                        degraded=wanted,
                        cloud_requests=front.requests - before,
                        late=_late(client, ids),
                    )
                )
                _check(figures, client, ids)
                assert p99 <= 2 * base_p99 + 2.0, (p99, base_p99)
                if fault in ("500", "429"):
                    # the breaker (500) or Retry-After (429) keeps the agent from hammering
                    assert front.requests - before < wanted, "not one cloud call per request"
            finally:
                agent.stop()
