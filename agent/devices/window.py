"""A bounded window of one device's readings for one task, always in timestamp order.

Readings with a device timestamp are resampled onto the task's period grid (sample and
hold: a grid slot takes the latest reading at or before it), so a device reporting faster,
slower or irregularly still gives the model samples at the rate it was trained at.
Readings without a timestamp are one sample each (the device is set to report at the
task's period). A silence longer than `max_gap_s` restarts the window, rather than holding
one value across it. Ordering is the caller's job (`agent/devices/device.py` refuses
readings older than the last one), so `add` only ever moves forward.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from agent.tasks.base import FloatArray

_EPS = 1e-6


@dataclass(frozen=True)
class Ready:
    """A full window to run: [length, channels] values and its first and last slot time."""

    values: FloatArray
    start: float
    end: float


class Window:
    def __init__(
        self,
        length: int,
        period_s: float | None,
        max_gap_s: float | None,
        hop: int | None = None,
    ) -> None:
        if length < 1 or (hop is not None and hop < 1):
            raise ValueError("length and hop must be positive")
        self.length = length
        self.period_s = period_s
        self.max_gap_s = max_gap_s
        self.hop = hop or length
        self._rows: deque[tuple[float, FloatArray]] = deque(maxlen=length)
        self._since_run = 0
        self._ran = False
        self._timed: bool | None = None
        self._last_ts: float | None = None
        self._last_row: FloatArray | None = None
        self._origin = 0.0
        self._next_slot = 0
        self.restarts = 0  # windows restarted by a gap or a change of clock
        self.held = 0  # slots filled by holding the previous reading

    @property
    def filled(self) -> int:
        return len(self._rows)

    def restart(self) -> None:
        self._rows.clear()
        self._since_run = 0
        self._ran = False
        self._timed = None
        self._last_ts = None
        self._last_row = None
        self._next_slot = 0

    def add(self, ts: float, row: FloatArray, timed: bool) -> list[Ready]:
        """Add one reading taken at `ts` (the device's time when `timed`, else the arrival
        time). Returns the windows that became ready to run (usually none or one)."""
        if self._last_ts is not None and (
            timed != self._timed
            or (self.max_gap_s is not None and ts - self._last_ts > self.max_gap_s)
        ):
            self.restarts += 1
            self.restart()
        ready: list[Ready] = []
        if not timed or self.period_s is None:
            self._push(ts, row, ready)
        else:
            period = self.period_s
            if self._last_ts is None:
                self._origin, self._next_slot = ts, 0
            position = (ts - self._origin) / period
            last = math.floor(position + _EPS)
            for slot in range(self._next_slot, last + 1):
                exact = slot == last and abs(position - slot) <= _EPS
                value = row if exact or self._last_row is None else self._last_row
                if not exact:
                    self.held += 1
                self._push(self._origin + slot * period, value, ready)
            self._next_slot = max(self._next_slot, last + 1)
        self._timed = timed
        self._last_ts, self._last_row = ts, row
        return ready

    def _push(self, ts: float, row: FloatArray, ready: list[Ready]) -> None:
        self._rows.append((ts, row))
        self._since_run += 1
        if len(self._rows) == self.length and (not self._ran or self._since_run >= self.hop):
            values = np.stack([r for _, r in self._rows]).astype(np.float32)
            ready.append(Ready(values, self._rows[0][0], self._rows[-1][0]))
            self._since_run = 0
            self._ran = True
