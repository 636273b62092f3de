"""A component that runs its own daemon thread and publishes through the MQTT client."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

M = TypeVar("M")


class Background(Generic[M]):
    """`start` runs `_run` on a daemon thread named `name` while `_running` is set; `stop`
    clears it and joins; `attach` hands over the MQTT client (`M`: what the subclass needs
    of it). The bridge and the device hub are built on it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._mqtt: M | None = None
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    def attach(self, mqtt: M) -> None:
        self._mqtt = mqtt

    def start(self) -> None:
        self._running.set()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        raise NotImplementedError
