"""Which readings each task takes from a device, and how many: the channels in canonical
column order, the window length and the sampling period the model was trained at.

`air_quality` is a rule, not a model (`agent/devices/rules.py`): it has no manifest entry
and never reaches the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from agent.tasks.base import FloatArray


@dataclass(frozen=True)
class BinarySensor:
    """A yes/no view of a task's label, as a Home Assistant binary_sensor."""

    key: str
    name: str
    on_labels: frozenset[str]
    device_class: str | None


@dataclass(frozen=True)
class Binding:
    task: str
    title: str  # entity name in Home Assistant
    icon: str
    kind: Literal["series", "image", "rule"]
    channels: tuple[str, ...]  # canonical column order
    length: int  # samples per window
    period_s: float | None  # resampling period of timestamped readings; None: none
    max_gap_s: float | None  # default: a longer silence restarts the window
    squeeze: bool = False  # a one-channel series is canonical [length], not [length, 1]
    binary: BinarySensor | None = None

    def canonical(self, window: FloatArray) -> FloatArray:
        """[length, channels] window -> the task's canonical sample."""
        out = window[:, 0] if self.squeeze else window
        return np.ascontiguousarray(out, dtype=np.float32)


_IMU = ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")

BINDINGS: dict[str, Binding] = {
    b.task: b
    for b in (
        # ACS-F1 (ACSF1): plug-level power signatures sampled every 10 s, 1460 samples.
        Binding(
            task="appliance",
            title="Appliance",
            icon="mdi:power-plug",
            kind="series",
            channels=("power",),
            length=1460,
            period_s=10.0,
            max_gap_s=50.0,
            squeeze=True,
        ),
        # BasicMotions: a smart watch's accelerometer and gyroscope at 10 Hz for 10 s.
        Binding(
            task="activity",
            title="Activity",
            icon="mdi:run",
            kind="series",
            channels=_IMU,
            length=100,
            period_s=0.1,
            max_gap_s=0.5,
        ),
        Binding(
            task="digits",
            title="Handwritten digit",
            icon="mdi:numeric",
            kind="image",
            channels=("image",),
            length=1,
            period_s=None,
            max_gap_s=None,
        ),
        Binding(
            task="air_quality",
            title="Air quality",
            icon="mdi:molecule-co2",
            kind="rule",
            channels=("co2",),
            length=1,
            period_s=None,
            max_gap_s=None,
            binary=BinarySensor(
                key="ventilation",
                name="Ventilation needed",
                on_labels=frozenset({"moderate", "poor"}),
                device_class="problem",
            ),
        ),
    )
}
