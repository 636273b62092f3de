"""The agent under a real notify socket: READY, WATCHDOG, STOPPING, and a wedged worker."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np

from agent.app import Agent
from agent.devtools.broker import Mosquitto
from agent.devtools.client import RequestClient
from agent.devtools.procs import agent_env, start_agent
from agent.registry import load_testset
from agent.service.notify import Notifier
from tests.conftest import DEPLOY_CONFIG, MODELS
from tests.helpers import agent_config

X_TEST, _ = load_testset(MODELS / "digits" / "testset.npz")


class NotifySocket:
    """A real AF_UNIX datagram socket like systemd's, recording (time, datagram)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def times(self, key: str) -> list[float]:
        return [t for t, m in self.messages if key in m.splitlines()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


def test_ready_watchdog_and_stopping_from_the_daemon(
    broker: Mosquitto, cloud_url: str, tmp_path: Path
) -> None:
    notify = NotifySocket(tmp_path)
    env = agent_env(
        broker.port,
        "sd",
        cloud_url,
        {
            "NOTIFY_SOCKET": str(notify.path),
            "WATCHDOG_USEC": "1000000",
        },
    )
    agent = start_agent(DEPLOY_CONFIG, env, tmp_path)
    try:
        with RequestClient(broker.host, broker.port, "sd") as c:
            end = time.monotonic() + 20
            while not notify.times("READY=1") and time.monotonic() < end:
                time.sleep(0.05)
            assert notify.times("READY=1"), agent.output()
            # READY=1 (a datagram) and the retained `online` (through the broker) race
            end = time.monotonic() + 5
            while time.monotonic() < end and not [
                p for t, p, _ in c.messages if t.endswith("/status")
            ]:
                time.sleep(0.02)
            assert [p for t, p, _ in c.messages if t.endswith("/status")][-1] == b"online"
            time.sleep(3.2)
            pets = notify.times("WATCHDOG=1")
            assert len(pets) >= 5, pets
            gaps = np.diff(pets)
            assert gaps.max() <= 0.5 + 0.25, gaps  # every WATCHDOG_USEC/2, with scheduling slack
            agent.signal(signal.SIGTERM)
            assert agent.wait(10) == 0
        assert notify.times("STOPPING=1")
        status = [m for _, m in notify.messages if m.startswith("STATUS=") or "\nSTATUS=" in m]
        assert status, "a human-readable STATUS= line"
    finally:
        agent.kill()
        notify.close()


def test_watchdog_stops_when_a_worker_is_wedged(
    broker: Mosquitto, cloud_url: str, tmp_path: Path
) -> None:
    notify = NotifySocket(tmp_path)
    config = agent_config(broker, cloud_url, EDGE_AGENT_WORKERS__STALL_TIMEOUT_S="0.5")
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
    agent = Agent(config, notifier=notifier)
    release = threading.Event()
    agent.start(connect_timeout=10)
    try:
        time.sleep(1.0)
        assert len(notify.times("WATCHDOG=1")) >= 3
        # Wedge the workers and the network thread's inline interpreters: inference that
        # never returns (a hung delegate, a deadlock).
        inline = agent.engine._inline_models
        assert inline, "digits is served inline by default"
        for models in [*agent.engine._worker_models, inline]:
            for model in models.values():
                model.predict = lambda x: (release.wait(), x)[1]  # type: ignore[method-assign]
        with RequestClient(broker.host, broker.port, config.id) as c:
            c.send("digits", {"pixels": X_TEST[0].tolist()})
            time.sleep(1.0)  # stall timeout passes
            wedged_at = time.monotonic()
            time.sleep(1.5)
            assert not [t for t in notify.times("WATCHDOG=1") if t > wedged_at]
            assert not agent.health()[0] and "stuck" in agent.health()[1]
    finally:
        release.set()
        agent.shutdown()
        notify.close()
