"""Feature transforms named by the model manifest (`input.features`): canonical batch in,
model input batch out. Pure numpy; the training code under models/ uses the same formulas."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agent.tasks.base import FloatArray

Feature = Callable[[FloatArray], FloatArray]


def digits_scaled(x: FloatArray) -> FloatArray:
    """[N, 8, 8] intensities 0..16 -> [N, 8, 8, 1] in 0..1."""
    return np.asarray(x.reshape(-1, 8, 8, 1) / np.float32(16.0), dtype=np.float32)


def identity(x: FloatArray) -> FloatArray:
    return x


FEATURES: dict[str, Feature] = {
    "identity": identity,
    "digits_scaled": digits_scaled,
}
