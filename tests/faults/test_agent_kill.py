"""The agent SIGKILLed at random moments under load and started again: every request is
answered (requests it had taken but not answered were never acknowledged, so the broker
redelivers them; answers already stored or delivered are not sent twice)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from agent.devtools.broker import Mosquitto
from tests.faults.harness import AgentProcess, LoadClient, report, size


def test_agent_sigkilled_under_load(tmp_path: Path, cloud_url: str) -> None:
    rate = size(100, 500)
    kills = int(size(3, 10))
    gap = size(3.0, 4.0)
    duration = kills * gap + 2.0
    with Mosquitto() as broker:
        agent = AgentProcess(broker.port, cloud_url, tmp_path)
        with LoadClient(broker.host, broker.port, agent.agent_id) as client:
            since = time.monotonic()
            agent.start()
            assert client.wait_status(b"online", since, 30), agent.output()
            downtime: list[float] = []
            try:

                def faults() -> None:
                    for _ in range(kills):
                        time.sleep(gap * random.uniform(0.4, 1.0))
                        killed = time.monotonic()
                        agent.kill()
                        agent.start()
                        if client.wait_status(b"online", killed, 30) is None:
                            raise AssertionError(f"agent did not come back: {agent.output()}")
                        downtime.append(time.monotonic() - killed)

                ids = client.stream_during(faults, rate, duration)
                client.wait_answered(ids, 60)
                figures = report(
                    client.figures(
                        f"agent SIGKILL x{kills} @ {rate:.0f} req/s",
                        ids,
                        restart_s_max=round(max(downtime), 2),
                    )
                )
                assert figures.lost == 0, agent.output()
                assert all(a["ok"] for a in client.first_answers(ids))
            finally:
                agent.stop()
