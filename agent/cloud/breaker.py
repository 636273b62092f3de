"""A circuit breaker: closed -> open after N consecutive failures -> half-open after a
cool-down, where one probe decides between closed and open again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        reset_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.opened_count = 0

    @property
    def state(self) -> State:
        with self._lock:
            self._refresh()
            return self._state

    def _refresh(self) -> None:
        if self._state == "open" and self._clock() - self._opened_at >= self.reset_timeout_s:
            self._state = "half_open"
            self._probing = False

    def allow(self) -> bool:
        """May a request go out now? In half-open state only one probe at a time."""
        with self._lock:
            self._refresh()
            if self._state == "closed":
                return True
            if self._state == "half_open" and not self._probing:
                self._probing = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._state = "closed"
            self._failures = 0
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state == "half_open" or self._failures >= self.failure_threshold:
                if self._state != "open":
                    self.opened_count += 1
                self._state = "open"
                self._opened_at = self._clock()
                self._probing = False

    def release(self) -> None:
        """A request that was allowed ended without a verdict (e.g. cancelled)."""
        with self._lock:
            self._probing = False
