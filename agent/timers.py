"""One thread that runs callbacks at monotonic deadlines (cancellable)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class TimerHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class DeadlineTimer:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._counter = itertools.count()
        self._running = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(1.0)

    def schedule(self, at: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle()
        with self._cond:
            heapq.heappush(self._heap, (at, next(self._counter), handle, callback))
            self._cond.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._running:
                    return
                now = time.monotonic()
                if not self._heap:
                    self._cond.wait(1.0)
                    continue
                at, _, handle, callback = self._heap[0]
                if at > now:
                    self._cond.wait(at - now)
                    continue
                heapq.heappop(self._heap)
            if not handle.cancelled:
                try:
                    callback()
                except Exception:
                    log.exception("deadline callback failed")
