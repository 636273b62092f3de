"""`appliance`: which appliance a smart plug powers, from a window of its power readings.

Canonical input: 1460 readings, oldest first, as one ACSF1 trace (the UCR archive's
appliance dataset, 10 classes). The models z-normalise each trace, so watts or any other
linear unit give the same answer; the window must have exactly 1460 readings (device windows
build that from a plug's stream, see docs/devices.md): a shorter or longer array is refused
with a clear error rather than silently stretched to another time scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from agent.config import LimitsConfig
from agent.errors import InputError
from agent.tasks.base import FloatArray, Task, number_array

WINDOW = 1460


class ApplianceTask(Task):
    name = "appliance"
    description = "appliance category from a smart plug's power trace (ACSF1)"
    canonical_shape = (WINDOW,)
    input_fields: ClassVar[Mapping[str, str]] = {
        "power_w": f"{WINDOW} power readings (W), oldest first, at the plug's sampling interval",
    }

    def request_input(self, canonical: FloatArray) -> dict[str, Any]:
        return {"power_w": canonical.reshape(WINDOW).tolist()}

    def parse_input(self, data: Mapping[str, Any], limits: LimitsConfig) -> FloatArray:
        self.check_fields(data, one_of=("power_w",))
        values = data["power_w"]
        if isinstance(values, list) and len(values) != WINDOW:
            raise InputError(
                "invalid_input",
                f"input.power_w: {WINDOW} readings expected (one ACSF1 window), got {len(values)}",
            )
        arr = number_array(values, "input.power_w", ndim=1, shape=(WINDOW,), low=-1e6, high=1e6)
        return np.asarray(arr, dtype=np.float32)
