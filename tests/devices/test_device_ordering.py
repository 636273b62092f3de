"""A device's results go out in window order whichever thread answers first: the ordering
itself (pure logic), and the hub with an engine that answers its windows in reverse."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from agent.config import load_config
from agent.devices.hub import DeviceHub
from agent.devices.ordering import ResultOrder
from agent.mqtt.client import Message
from agent.mqtt.topics import Topics
from agent.registry import load_testset
from agent.stats import Stats
from tests.devices.devhelpers import MODELS, PROFILES


def _recorder() -> tuple[list[int], Callable[[int], Callable[[], None]]]:
    out: list[int] = []
    return out, lambda i: lambda: out.append(i)


def test_answers_go_out_in_ticket_order_and_empty_ones_are_skipped() -> None:
    order = ResultOrder()
    out, emit = _recorder()
    tickets = [order.ticket(0.0) for _ in range(5)]
    order.release(tickets[3], emit(3))
    order.release(tickets[1], None)  # a failed window: nothing to publish
    order.release(tickets[2], emit(2))
    assert out == [] and order.held == 3  # ticket 0 is still out
    order.release(tickets[0], emit(0))
    assert out == [0, 2, 3]
    order.release(tickets[4], emit(4))
    assert out == [0, 2, 3, 4] and order.held == 0


def test_a_window_never_answered_holds_the_others_only_until_expiry() -> None:
    order = ResultOrder()
    out, emit = _recorder()
    stuck = order.ticket(0.0)
    later = order.ticket(1.0)
    order.release(later, emit(1))
    assert order.expire(now=10.0, max_wait_s=20.0) == 0 and out == []
    assert order.expire(now=25.0, max_wait_s=20.0) == 1
    assert out == [1]
    order.release(stuck, emit(0))  # late after all: published, not dropped, and counted
    assert out == [1, 0] and order.late == 1


def test_concurrent_answers_in_random_order_come_out_in_order() -> None:
    order = ResultOrder()
    out, emit = _recorder()
    n = 400
    tickets = [order.ticket(0.0) for _ in range(n)]
    shuffled = list(range(n))
    random.Random(7).shuffle(shuffled)
    parts = [shuffled[k::4] for k in range(4)]

    def answer(indices: list[int]) -> None:
        for i in indices:
            order.release(tickets[i], emit(i))

    threads = [threading.Thread(target=answer, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == list(range(n))


class _Mqtt:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        self.published.append((topic, payload))
        return True

    def ack(self, message: Message) -> None:
        return None

    def subscribe(self, topic: str, qos: int) -> None:
        return None


class _Engine:
    """Takes windows and lets the test answer them in any order (as two workers or the
    cloud can); the third window is refused, as with a full queue."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, Callable[[dict[str, Any]], None]]] = []
        self.calls = 0

    def submit_internal(
        self, task: str, canonical: Any, on_answer: Callable[[dict[str, Any]], None], *, rid: str
    ) -> bool:
        self.calls += 1
        if self.calls == 3:
            return False
        self.jobs.append((rid, on_answer))
        return True


def test_the_hub_publishes_a_wearables_windows_in_order_when_answered_in_reverse(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.yaml"
    data = {
        "id": "order",
        "models": {"dir": str(MODELS)},
        "device_profiles": str(PROFILES),
        "tasks": {"activity": {}},
        "devices": [{"id": "wrist-1", "profile": "wearable_imu", "tasks": ["activity"], "hop": 10}],
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    config = load_config(path, environ={})
    topics = Topics(config.base_topic, config.id, None)
    engine, mqtt = _Engine(), _Mqtt()
    hub = DeviceHub(config, topics, Stats(), engine=lambda: engine, tasks=lambda: {})
    hub.attach(mqtt)
    hub.start()
    try:
        x, _ = load_testset(MODELS / "activity" / "testset.npz")
        series = np.concatenate([x[0], x[1]]).astype(float)
        t0 = 1_730_800_000.0
        for j in range(0, 150, 10):  # the first window after 10 batches, then one per batch
            body = {
                "ts": t0 + j / 10,
                "rate_hz": 10,
                "accel": series[j : j + 10, :3].tolist(),
                "gyro": series[j : j + 10, 3:].tolist(),
            }
            hub.offer(Message("wearables/wrist-1/imu", orjson.dumps(body), 1, False, j + 1))
        end = time.monotonic() + 10
        while engine.calls < 6 and time.monotonic() < end:
            time.sleep(0.02)
        assert engine.calls == 6
        for k, (rid, on_answer) in enumerate(reversed(engine.jobs)):
            if k == 1:  # a failed window: reported on the error topic, skipped here
                on_answer({"id": rid, "task": "activity", "ok": False, "error": {"code": "x"}})
            else:
                on_answer({"id": rid, "task": "activity", "ok": True, "result": {}})
        topic = topics.device_result("wrist-1", "activity")
        ends = [orjson.loads(p)["window"]["end"] for t, p in mqtt.published if t == topic]
        assert len(ends) == 4 and ends == sorted(ends), ends  # 6 windows: 1 refused, 1 failed
        assert ends[-1] == pytest.approx(t0 + 14.9)  # the retained state: the newest window
    finally:
        hub.stop()
