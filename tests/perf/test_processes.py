"""`workers.processes`: one agent, several serving processes sharing its requests.

Real mosquitto, the agent as a subprocess, real models. The main process starts the extra
serving process itself; the requests split between them through a shared subscription,
every request is answered exactly once, a serving process that is SIGKILLed is restarted
and the requests it held are answered after all, and stopping the agent stops them all.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import orjson
import pytest

from agent.bench.procstats import child_pids
from agent.devtools.broker import Mosquitto
from agent.devtools.procs import agent_env, start_agent
from agent.mqtt.client import Message
from agent.registry import load_testset
from tests.perf.test_scale_out import Watcher, send

AGENT = "multi"


def serving_children(pid: int) -> list[int]:
    found = []
    for child in child_pids(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"--serving-process" in argv:
            found.append(child)
    return found


class ProcessWatcher(Watcher):
    """The scale-out watcher, on one agent's topics, keeping `stats/p<N>` apart."""

    def __init__(self, broker: Mosquitto) -> None:
        super().__init__(broker)
        self.mqtt.subscribe(f"edge-agent/{AGENT}/response/+", 1)
        self.mqtt.subscribe(f"edge-agent/{AGENT}/stats/+", 0)

    def _on_message(self, m: Message) -> None:
        if m.topic.startswith(f"edge-agent/{AGENT}/stats/"):
            with self.lock:
                self.stats[m.topic.rsplit("/", 1)[-1]] = orjson.loads(m.payload)
                self.lock.notify_all()
            return
        super()._on_message(m)


@pytest.mark.slow
def test_serving_processes_share_requests_and_are_restarted(
    tmp_path: Path, digits_models: Path
) -> None:
    x, _ = load_testset(digits_models / "digits" / "testset.npz")
    inputs: list[dict[str, object]] = [{"pixels": s.astype(int).tolist()} for s in x]
    with Mosquitto(persistence=False) as broker:
        config = tmp_path / "agent.yaml"
        config.write_text(
            json.dumps(
                {
                    "workers": {"processes": 2},
                    "models": {"dir": str(digits_models)},
                    "stats": {"interval_s": 0.5},
                    "tasks": {"digits": {"cloud": False}},
                }
            )
        )
        agent = start_agent(config, agent_env(broker.port, AGENT, None), tmp_path)
        assert agent.proc is not None
        watcher = ProcessWatcher(broker)
        watcher.mqtt.start()
        try:
            assert watcher.mqtt.wait_connected(10)
            # the main process is online and the serving process reports its stats
            up = watcher.wait(
                lambda: watcher.status.get(AGENT) == b"online" and "p1" in watcher.stats, 30
            )
            assert up, agent.output()[-3000:]
            time.sleep(0.5)
            helpers = serving_children(agent.proc.pid)
            assert len(helpers) == 1, helpers

            first = send(watcher, inputs[:300], "a", AGENT)
            assert watcher.wait(lambda: all(r in watcher.answers for r in first), 30)
            assert watcher.wait(
                lambda: watcher.answered_by(AGENT) + watcher.answered_by("p1") == len(first), 10
            ), watcher.stats
            split = {k: watcher.answered_by(k) for k in (AGENT, "p1")}
            assert all(n >= len(first) // 10 for n in split.values()), split

            os.kill(helpers[0], signal.SIGKILL)
            second = send(watcher, inputs[300:450], "b", AGENT)
            assert watcher.wait(lambda: all(r in watcher.answers for r in second), 30), (
                f"{sum(r in watcher.answers for r in second)}/{len(second)} answered\n"
                + agent.output()[-3000:]
            )
            end = time.monotonic() + 15
            while time.monotonic() < end:  # restarted after a 1 s backoff
                restarted = serving_children(agent.proc.pid)
                if restarted and restarted != helpers:
                    break
                time.sleep(0.2)
            assert len(restarted) == 1 and restarted != helpers, (helpers, restarted)
            # the new one serves again (its stats are retained: wait for fresh counts)
            with watcher.lock:
                watcher.stats.pop("p1", None)
            assert watcher.wait(lambda: "p1" in watcher.stats, 15), agent.output()[-3000:]
            time.sleep(1.0)  # late duplicates, if any, would arrive now
            with watcher.lock:
                dupes = {r: len(v) for r, v in watcher.answers.items() if len(v) != 1}
                assert not dupes, dupes
                assert set(watcher.answers) == set(first + second)
                assert all(watcher.answers[r][0]["ok"] is True for r in first + second)
        finally:
            watcher.mqtt.stop(timeout=1.0)
            pid = agent.proc.pid
            helpers = serving_children(pid)
            agent.stop(timeout=10)
        # stopping the agent stopped its serving processes
        for child in helpers:
            assert not Path(f"/proc/{child}").exists() or _zombie(child), child


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return False
