"""One configured device: parse its messages, keep its readings in timestamp order and its
windows, and say which windows are ready to run. Pure logic, one thread (the device hub's).

Ordering, for readings that carry the device's own timestamp:
- a message whose first timestamp equals that of the last message taken is a duplicate
  (a re-sent state, a QoS 1 redelivery): dropped quietly;
- an older one is out of order: refused with `out_of_order` (an error message), unless it
  is the third in a row, which means the device's clock went back for good (reboot, NTP
  step): its windows then restart on the new clock.
Readings without a timestamp take their arrival time, which never goes backwards here.
A refused message changes nothing: every check runs before any window is touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.devices.bindings import Binding
from agent.devices.config import DeviceConfig
from agent.devices.parse import Parser, Reading
from agent.devices.profiles import Profile
from agent.devices.window import Window
from agent.errors import InputError
from agent.tasks.base import FloatArray

RESYNC_AFTER = 3  # consecutive backward messages that mean the device clock was reset


@dataclass(frozen=True)
class Job:
    """A window ready to run one task on."""

    device: str
    task: str
    source_topic: str
    values: FloatArray  # [length, channels]; an image task's canonical sample
    start: float
    end: float
    samples: int


class Device:
    def __init__(
        self,
        config: DeviceConfig,
        profile: Profile,
        bindings: list[Binding],
        max_payload_bytes: int,
        convert_image: Callable[[str, str], FloatArray] | None = None,
    ) -> None:
        self.config = config
        self._convert_image = convert_image
        self.profile = profile
        self.bindings = bindings
        self.parser = Parser(profile, config.fields, max_payload_bytes)
        self.windows: dict[str, Window] = {
            b.task: Window(
                b.length,
                b.period_s,
                config.max_gap_s or b.max_gap_s,
                config.hop if b.length > 1 else None,
            )
            for b in bindings
            if b.kind != "image"
        }
        self.last_ts: float | None = None  # the device's clock, last reading taken
        self._last_first_ts: float | None = None  # first reading of the last message
        self._backwards = 0
        self._last_arrival = 0.0
        self.last_seen: float | None = None  # time.monotonic() of the last valid message
        self.available: bool = False
        self.messages = 0
        self.errors = 0
        self.duplicates = 0
        self.results = 0

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def topic(self) -> str:
        return self.config.topic or self.profile.default_topic(self.config.id)

    @property
    def unavailable_after_s(self) -> float:
        return self.config.unavailable_after_s or self.profile.unavailable_after_s

    def restart_windows(self) -> None:
        for window in self.windows.values():
            window.restart()

    def ingest(self, topic: str, payload: bytes, arrival: float) -> list[Job]:
        """Take one message. Raises InputError (and keeps nothing) when it is invalid."""
        self.messages += 1
        readings = self.parser.parse(topic, payload)
        if not readings:  # valid, but nothing a task uses (an ESPHome node's wifi signal)
            self.last_seen = time.monotonic()
            return []
        first = readings[0].ts
        resync = False
        if first is not None and self.last_ts is not None and first <= self.last_ts:
            if first == self._last_first_ts:
                self.duplicates += 1
                self.last_seen = time.monotonic()
                return []
            self._backwards += 1
            if self._backwards < RESYNC_AFTER:
                raise InputError(
                    "out_of_order",
                    f"timestamp {first:.3f} is before the last reading's {self.last_ts:.3f}",
                )
            resync = True  # the device's clock went back for good
        images = self._images(readings)  # may raise: before anything is kept
        if resync:
            self.restart_windows()
            self.last_ts = None
        self._backwards = 0
        self._last_first_ts = first
        self.last_seen = time.monotonic()
        arrival = max(arrival, self._last_arrival)
        self._last_arrival = arrival
        jobs: list[Job] = []
        for i, reading in enumerate(readings):
            jobs.extend(self._take(topic, reading, arrival, images.get(i)))
            if reading.ts is not None:
                self.last_ts = reading.ts
        return jobs

    def _images(self, readings: list[Reading]) -> dict[int, dict[str, FloatArray]]:
        """Image readings decoded into each image task's canonical sample."""
        out: dict[int, dict[str, FloatArray]] = {}
        for i, reading in enumerate(readings):
            if reading.image is None:
                continue
            for binding in self.bindings:
                if binding.kind == "image":
                    if self._convert_image is None:
                        raise InputError("unknown_task", f"task {binding.task} is not served")
                    decoded = self._convert_image(binding.task, reading.image)
                    out.setdefault(i, {})[binding.task] = decoded
        return out

    def _take(
        self,
        topic: str,
        reading: Reading,
        arrival: float,
        images: dict[str, FloatArray] | None,
    ) -> list[Job]:
        jobs: list[Job] = []
        ts = reading.ts if reading.ts is not None else arrival
        for binding in self.bindings:
            if binding.kind == "image":
                if images and binding.task in images:
                    canonical = images[binding.task]
                    jobs.append(Job(self.id, binding.task, topic, canonical, ts, ts, 1))
                continue
            if not all(c in reading.values for c in binding.channels):
                continue
            row = np.array([reading.values[c] for c in binding.channels], dtype=np.float32)
            window = self.windows[binding.task]
            for ready in window.add(ts, row, reading.ts is not None):
                jobs.append(
                    Job(
                        self.id,
                        binding.task,
                        topic,
                        ready.values,
                        ready.start,
                        ready.end,
                        ready.values.shape[0],
                    )
                )
        return jobs

    def describe(self) -> dict[str, object]:
        """For the bridge's `devices` answer."""
        age = None if self.last_seen is None else round(time.monotonic() - self.last_seen, 1)
        return {
            "id": self.id,
            "name": self.config.display_name,
            "profile": self.profile.name,
            "topic": self.topic,
            "tasks": list(self.config.tasks),
            "available": self.available,
            "last_seen_s_ago": age,
            "messages": self.messages,
            "errors": self.errors,
            "duplicates": self.duplicates,
            "results": self.results,
            "windows": {
                task: {
                    "filled": w.filled,
                    "length": w.length,
                    "hop": w.hop,
                    "period_s": w.period_s,
                    "restarts": w.restarts,
                }
                for task, w in self.windows.items()
            },
        }
