"""Counters and latency percentiles for the retained stats message (and metrics)."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque
from typing import Any

import numpy as np


class Stats:
    def __init__(self, window: int = 2048) -> None:
        self._lock = threading.Lock()
        self._window = window
        self.started = time.monotonic()
        self.counters: Counter[str] = Counter()
        self.per_task: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.errors: Counter[str] = Counter()
        self._latency: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def error(self, code: str) -> None:
        with self._lock:
            self.counters["errors"] += 1
            self.errors[code] += 1

    def answered(self, task: str, source: str, degraded: bool, latency_ms: float) -> None:
        with self._lock:
            counts = self.per_task[task]
            counts["answered"] += 1
            counts[source] += 1
            if degraded:
                counts["degraded"] += 1
            self._latency[task].append(latency_ms)

    def failed(self, task: str, code: str) -> None:
        with self._lock:
            self.per_task[task]["failed"] += 1
            self.per_task[task][f"failed_{code}"] += 1

    def snapshot(self, **gauges: Any) -> dict[str, Any]:
        with self._lock:
            tasks: dict[str, Any] = {}
            for task, counts in self.per_task.items():
                lat = np.fromiter(self._latency[task], dtype=np.float64)
                tasks[task] = {
                    "answered": counts["answered"],
                    "edge": counts["edge"],
                    "cloud": counts["cloud"],
                    "degraded": counts["degraded"],
                    "failed": counts["failed"],
                    "latency_ms": {
                        "p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
                        "p95": round(float(np.percentile(lat, 95)), 3) if lat.size else None,
                    },
                }
            return {
                "messages_in": self.counters["messages_in"],
                "messages_out": self.counters["messages_out"],
                "errors": self.counters["errors"],
                "error_codes": dict(self.errors),
                "tasks": tasks,
                "uptime_s": round(time.monotonic() - self.started, 1),
                "ts": round(time.time(), 3),
                **gauges,
            }
