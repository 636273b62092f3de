"""Counters and latency percentiles for the retained stats message (and metrics)."""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, defaultdict, deque
from typing import Any

import numpy as np

# Latency histogram bucket upper bounds, in milliseconds (cumulative counts, Prometheus-style).
LATENCY_BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)


class Stats:
    def __init__(self, window: int = 2048) -> None:
        self._lock = threading.Lock()
        self._window = window
        self.started = time.monotonic()
        self.counters: Counter[str] = Counter()
        self.per_task: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.errors: Counter[str] = Counter()
        self._latency: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
        # per task: counts per bucket (last slot: above every bound), and the sum of latencies
        self._buckets: defaultdict[str, list[int]] = defaultdict(
            lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1)
        )
        self._latency_sum: defaultdict[str, float] = defaultdict(float)

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
            self._buckets[task][bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
            self._latency_sum[task] += latency_ms

    def histograms(self) -> dict[str, tuple[list[int], float]]:
        """Per task: (cumulative counts per bucket of LATENCY_BUCKETS_MS then +Inf, sum ms)."""
        with self._lock:
            out: dict[str, tuple[list[int], float]] = {}
            for task, counts in self._buckets.items():
                cumulative, total = [], 0
                for count in counts:
                    total += count
                    cumulative.append(total)
                out[task] = (cumulative, self._latency_sum[task])
            return out

    def counts(self) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, int]]]:
        """(counters, error codes, per-task counters) copies, for the metrics endpoint."""
        with self._lock:
            return (
                dict(self.counters),
                dict(self.errors),
                {task: dict(c) for task, c in self.per_task.items()},
            )

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
