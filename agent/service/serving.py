"""More serving processes for one agent (`workers.processes`).

One Python process runs Python on one core at a time (the GIL), so on a multi-core board
the agent starts `processes - 1` more processes of itself that serve requests only. They
and the main process subscribe to the requests through one MQTT 5 shared subscription, so
the broker hands each request to one of them. The main process keeps everything else
(status, devices, cameras, the bridge, Home Assistant, metrics, the systemd watchdog),
restarts a serving process that dies (with backoff), forwards SIGHUP and stops them with
itself. Each serving process has its own MQTT session (`<client id>-p<N>`) and its own
outbox and de-duplication file. After `processes` is lowered, SessionCleanup moves what the
broker still queued for the dropped processes' sessions to the live ones and ends those
sessions (agent/mqtt/drain.py).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.config import MqttConfig
from agent.errors import MqttError
from agent.mqtt.drain import drain_session
from agent.mqtt.ledger import StoredSession, stored_sessions

log = logging.getLogger(__name__)

EX_CONFIG = 78
_SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class ServingProcesses:
    def __init__(self, count: int, config_path: Path | None, poll_s: float = 0.5) -> None:
        self._count = count
        self._config_path = config_path
        self._poll_s = poll_s
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._restart_at: dict[int, float] = {}
        self._started: dict[int, float] = {}
        self._delay: dict[int, float] = {}
        self._given_up: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="serving-procs", daemon=True)
        self.restarts = 0

    def argv(self, index: int) -> list[str]:
        argv = [sys.executable, "-m", "agent", "run", "--serving-process", str(index)]
        if self._config_path is not None:
            argv += ["--config", str(self._config_path)]
        return argv

    def start(self) -> None:
        for index in range(1, self._count + 1):
            self._spawn(index)
        self._thread.start()

    def _spawn(self, index: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
        proc = subprocess.Popen(self.argv(index), env=env, stdin=subprocess.DEVNULL)
        with self._lock:
            self._procs[index] = proc
            self._started[index] = time.monotonic()
        log.info("serving process %d started (pid %d)", index, proc.pid)

    def _watch(self) -> None:
        while not self._stop.wait(self._poll_s):
            now = time.monotonic()
            with self._lock:
                items = list(self._procs.items())
            for index, proc in items:
                code = proc.poll()
                if code is None or index in self._given_up or self._stop.is_set():
                    continue
                if code == EX_CONFIG:  # its configuration or models are wrong: no retry storm
                    log.error("serving process %d refused its configuration; not restarting", index)
                    self._given_up.add(index)
                    continue
                due = self._restart_at.get(index)
                if due is None:
                    if now - self._started.get(index, now) > 60.0:
                        self._delay[index] = 0.5  # it ran for a while: start over
                    delay = min(30.0, self._delay.get(index, 0.5) * 2)
                    self._delay[index] = delay
                    self._restart_at[index] = now + delay
                    log.warning(
                        "serving process %d exited with %s; restarting in %.1fs", index, code, delay
                    )
                elif now >= due:
                    del self._restart_at[index]
                    self.restarts += 1
                    self._spawn(index)

    def forward(self, signum: int) -> None:
        for proc in self._alive():
            proc.send_signal(signum)

    def _alive(self) -> list[subprocess.Popen[bytes]]:
        with self._lock:
            return [p for p in self._procs.values() if p.poll() is None]

    def terminate(self) -> None:
        """Ask every serving process to stop (they finish what they hold, like the agent)."""
        self._stop.set()
        self.forward(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        """Wait for them to exit; kill what is still running after `timeout`."""
        end = time.monotonic() + timeout
        for proc in self._alive():
            try:
                proc.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread.is_alive():
            self._thread.join(1.0)


class SessionCleanup:
    """The main process's clean-up of serving-process sessions it no longer starts: every
    recorded `<client id>-p<K>` with K >= processes is drained once the main process is
    connected (so the messages published again reach a live subscriber), in a background
    thread; its record is deleted when that worked, kept for the next start when not."""

    def __init__(
        self,
        mqtt: MqttConfig,
        password: str | None,
        state_dir: Path,
        client_id: str,
        processes: int,
    ) -> None:
        self._mqtt = mqtt
        self._password = password
        self._state_dir = state_dir
        self._prefix = f"{client_id}-p"
        self._processes = processes

    def dropped(self) -> list[StoredSession]:
        found = []
        for stored in stored_sessions(self._state_dir):
            index = stored.client_id.removeprefix(self._prefix)
            ours = stored.client_id.startswith(self._prefix) and index.isdigit()
            if ours and int(index) >= self._processes:
                found.append(stored)
        return found

    def start(self, connected: Callable[[float], bool], stop: threading.Event) -> None:
        dropped = self.dropped()
        if dropped:
            threading.Thread(
                target=self._run, args=(dropped, connected, stop), name="session-drain", daemon=True
            ).start()

    def _run(
        self,
        dropped: list[StoredSession],
        connected: Callable[[float], bool],
        stop: threading.Event,
    ) -> None:
        while not connected(0.5):
            if stop.is_set():
                return
        for stored in dropped:
            client_id = stored.client_id
            if stop.is_set():
                return
            try:
                moved = drain_session(self._mqtt, self._password, client_id, stored.filters)
            except MqttError as exc:
                log.warning("session of dropped serving process %s not drained: %s", client_id, exc)
                continue
            stored.path.unlink(missing_ok=True)
            log.info(
                "ended the session of dropped serving process %s; %d queued message(s) "
                "published again for the live processes",
                client_id,
                moved,
            )
