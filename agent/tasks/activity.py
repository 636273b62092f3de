"""`activity`: what a wearable's wearer is doing, from 10 s of 6-axis IMU data.

Canonical input: 100 time steps (BasicMotions: 10 Hz for 10 s) of accelerometer x, y, z then
gyroscope x, y, z, in the dataset's units. Classes: standing, walking, running, badminton.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from agent.config import LimitsConfig
from agent.tasks.base import FloatArray, Task, number_array

STEPS = 100


class ActivityTask(Task):
    name = "activity"
    description = "activity (standing, walking, running, badminton) from a 6-axis IMU window"
    canonical_shape = (STEPS, 6)
    input_fields: ClassVar[Mapping[str, str]] = {
        "accel": f"{STEPS} x [x, y, z] accelerometer samples at 10 Hz, oldest first",
        "gyro": f"{STEPS} x [x, y, z] gyroscope samples at 10 Hz, oldest first",
    }

    def request_input(self, canonical: FloatArray) -> dict[str, Any]:
        window = canonical.reshape(STEPS, 6)
        return {"accel": window[:, :3].tolist(), "gyro": window[:, 3:].tolist()}

    def parse_input(self, data: Mapping[str, Any], limits: LimitsConfig) -> FloatArray:
        self.check_fields(data, one_of=("accel",))
        if "gyro" not in data:
            self.check_fields(data, one_of=("gyro",))
        accel = number_array(
            data["accel"], "input.accel", ndim=2, shape=(STEPS, 3), low=-1e4, high=1e4
        )
        gyro = number_array(
            data["gyro"], "input.gyro", ndim=2, shape=(STEPS, 3), low=-1e4, high=1e4
        )
        return np.asarray(np.concatenate([accel, gyro], axis=1), dtype=np.float32)
