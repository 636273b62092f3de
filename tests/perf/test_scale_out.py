"""Scale-out: three agents share one task's requests through MQTT 5 shared subscriptions.

Real mosquitto, real agents as subprocesses (one `scale_out.group` key each), real models.
The load splits, every request is answered exactly once on the group's response topic, and
after one agent is killed the other two answer everything sent afterwards.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

from agent.config import MqttConfig
from agent.devtools.broker import Mosquitto
from agent.devtools.procs import Process, agent_env, start_agent
from agent.mqtt.client import Message, MqttClient
from agent.registry import load_testset

GROUP = "pool"


class Watcher:
    """Collects the group's answers (by id) and every agent's status and stats."""

    def __init__(self, broker: Mosquitto) -> None:
        self.lock = threading.Condition()
        self.answers: dict[str, list[dict[str, object]]] = {}
        self.status: dict[str, bytes] = {}
        self.stats: dict[str, dict[str, object]] = {}
        config = MqttConfig.model_validate(
            {"host": broker.host, "port": broker.port, "session_expiry_s": 0}
        )
        self.mqtt = MqttClient(
            config,
            f"watcher-{uuid.uuid4().hex[:6]}",
            will=None,
            subscriptions=[
                (f"edge-agent/{GROUP}/response/+", 1),
                ("edge-agent/+/status", 1),
                ("edge-agent/+/stats", 0),
            ],
            on_message=self._on_message,
            manual_ack=False,
        )

    def _on_message(self, m: Message) -> None:
        with self.lock:
            level = m.topic.split("/")
            if "/response/" in m.topic:
                body = orjson.loads(m.payload)
                self.answers.setdefault(body["id"], []).append(body)
            elif level[-1] == "status":
                self.status[level[1]] = m.payload
            elif level[-1] == "stats":
                self.stats[level[1]] = orjson.loads(m.payload)
            self.lock.notify_all()

    def wait(self, predicate: object, timeout: float) -> bool:
        assert callable(predicate)
        with self.lock:
            return self.lock.wait_for(predicate, timeout)

    def answered_by(self, agent_id: str) -> int:
        task = self.stats.get(agent_id, {}).get("tasks", {})
        assert isinstance(task, dict)
        digits = task.get("digits", {})
        return int(digits.get("answered", 0)) if isinstance(digits, dict) else 0


def send(
    watcher: Watcher, inputs: list[dict[str, object]], tag: str, root: str = GROUP
) -> list[str]:
    ids = []
    for i, item in enumerate(inputs):
        rid = f"{tag}-{i}"
        ids.append(rid)
        payload = orjson.dumps({"id": rid, "input": item})
        watcher.mqtt.publish(f"edge-agent/{root}/request/digits", payload, qos=1)
    return ids


@pytest.mark.slow
def test_three_agents_share_requests_and_survive_a_kill(
    tmp_path: Path, digits_models: Path
) -> None:
    models = digits_models
    x, _ = load_testset(models / "digits" / "testset.npz")
    inputs: list[dict[str, object]] = [{"pixels": s.astype(int).tolist()} for s in x]
    ids = [f"so{i}" for i in range(3)]
    with Mosquitto(persistence=False) as broker:
        config = tmp_path / "agent.yaml"
        config.write_text(
            json.dumps(
                {
                    "scale_out": {"group": GROUP},  # the one key scale-out needs
                    "models": {"dir": str(models)},
                    "stats": {"interval_s": 0.5},
                    "tasks": {"digits": {"cloud": False}},
                }
            )
        )
        agents: list[Process] = [
            start_agent(config, agent_env(broker.port, i, None), tmp_path, name=i) for i in ids
        ]
        watcher = Watcher(broker)
        watcher.mqtt.start()
        try:
            assert watcher.mqtt.wait_connected(10)
            online = watcher.wait(lambda: all(watcher.status.get(i) == b"online" for i in ids), 30)
            assert online, "\n".join(a.output()[-1500:] for a in agents)
            time.sleep(0.5)  # the SUBACKs of the last agent to connect

            first = send(watcher, inputs[:300], "a")
            assert watcher.wait(lambda: all(r in watcher.answers for r in first), 30)
            # the split, from each agent's own stats (retained, every 0.5 s)
            assert watcher.wait(
                lambda: sum(watcher.answered_by(i) for i in ids) == len(first), 10
            ), watcher.stats
            counts = {i: watcher.answered_by(i) for i in ids}
            assert all(n >= len(first) // 10 for n in counts.values()), counts

            agents[0].kill()  # SIGKILL: no clean disconnect; the broker sees the socket close
            assert watcher.wait(lambda: watcher.status.get(ids[0]) == b"offline", 10)
            second = send(watcher, inputs[300:450], "b")
            assert watcher.wait(lambda: all(r in watcher.answers for r in second), 30), (
                f"{sum(r in watcher.answers for r in second)}/{len(second)} answered"
            )
            time.sleep(1.0)  # late duplicates, if any, would arrive now
            with watcher.lock:
                dupes = {r: len(v) for r, v in watcher.answers.items() if len(v) != 1}
                assert not dupes, dupes
                assert all(watcher.answers[r][0]["ok"] is True for r in first + second)
                assert set(watcher.answers) == set(first + second)
            after = {i: watcher.answered_by(i) - counts[i] for i in ids[1:]}
            assert all(n > 0 for n in after.values()), after
        finally:
            watcher.mqtt.stop(timeout=1.0)
            for a in agents:
                a.stop(timeout=5)
