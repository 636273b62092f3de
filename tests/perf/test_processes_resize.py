"""Changing `workers.processes` between runs, with the broker keeping the sessions.

Lowering it leaves the dropped serving processes' sessions on the broker, still members of
the shared request subscription; raising it from 1 leaves the plain request filter in the
main process's session. Real mosquitto, the agent as a subprocess, real models.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.devtools.broker import Mosquitto
from agent.devtools.procs import Process, agent_env, start_agent
from agent.registry import load_testset
from tests.perf.test_processes import AGENT, ProcessWatcher
from tests.perf.test_scale_out import send


class Runs:
    """One broker and one state directory; the agent started and stopped with a config each."""

    def __init__(self, broker: Mosquitto, tmp_path: Path, models: Path) -> None:
        self.tmp_path, self.models = tmp_path, models
        self.config = tmp_path / "agent.yaml"
        self.env = agent_env(broker.port, AGENT, None)
        self.agent: Process | None = None
        self.watcher = ProcessWatcher(broker)

    def start(self, processes: int, wait_online: bool = True) -> None:
        self.config.write_text(
            json.dumps(
                {
                    "workers": {"processes": processes},
                    "models": {"dir": str(self.models)},
                    "stats": {"interval_s": 0.5},
                    "tasks": {"digits": {"cloud": False}},
                }
            )
        )
        w = self.watcher
        with w.lock:
            w.stats.clear()
        self.agent = start_agent(self.config, self.env, self.tmp_path)
        if wait_online:
            last = f"p{processes - 1}" if processes > 1 else AGENT
            up = w.wait(lambda: w.status.get(AGENT) == b"online" and last in w.stats, 30)
            assert up, self.agent.output()[-3000:]

    def stop(self) -> None:
        assert self.agent is not None
        self.agent.stop(timeout=10)
        assert self.watcher.wait(lambda: self.watcher.status.get(AGENT) == b"stopped", 10)

    def output(self) -> str:
        return self.agent.output()[-3000:] if self.agent is not None else ""


@contextmanager
def runs(tmp_path: Path, models: Path) -> Iterator[Runs]:
    with Mosquitto(persistence=False) as broker:
        r = Runs(broker, tmp_path, models)
        r.watcher.mqtt.start()
        try:
            assert r.watcher.mqtt.wait_connected(10)
            yield r
        finally:
            r.watcher.mqtt.stop(timeout=1.0)
            if r.agent is not None:
                r.agent.stop(timeout=10)


def _inputs(models: Path, n: int) -> list[dict[str, object]]:
    x, _ = load_testset(models / "digits" / "testset.npz")
    return [{"pixels": s.astype(int).tolist()} for s in x[:n]]


@pytest.mark.slow
@pytest.mark.parametrize(("before", "after"), [(2, 1), (3, 2)])
def test_requests_sent_while_stopped_are_answered_after_lowering_processes(
    tmp_path: Path, digits_models: Path, before: int, after: int
) -> None:
    inputs = _inputs(digits_models, 40)
    with runs(tmp_path, digits_models) as r:
        r.start(before)
        r.stop()
        ids = send(r.watcher, inputs, "q", AGENT)  # nobody is serving: the broker queues
        time.sleep(0.5)
        r.start(after, wait_online=False)
        answered = r.watcher.wait(lambda: all(i in r.watcher.answers for i in ids), 30)
        n = sum(i in r.watcher.answers for i in ids)
        assert answered, f"{n}/{len(ids)} answered\n{r.output()}"


@pytest.mark.slow
def test_raising_processes_answers_every_request_once(tmp_path: Path, digits_models: Path) -> None:
    inputs = _inputs(digits_models, 100)
    with runs(tmp_path, digits_models) as r:
        r.start(1)
        r.stop()
        r.start(2)
        ids = send(r.watcher, inputs, "r", AGENT)
        assert r.watcher.wait(lambda: all(i in r.watcher.answers for i in ids), 30)
        time.sleep(1.0)  # late duplicates, if any, would arrive now
        with r.watcher.lock:
            dupes = {i: len(v) for i, v in r.watcher.answers.items() if len(v) != 1}
        assert not dupes, dupes
