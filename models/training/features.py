"""Reference feature transforms (numpy only, no TensorFlow).

Each transform maps a batch of *canonical* inputs ``[N, ...]`` (float32) to the
batch of model inputs ``[N, ...]`` (float32).  The agent may copy this module
verbatim; ``models/FEATURES.md`` gives the same definitions as formulas.

Quantisation of int8 models is *not* part of a transform: it is applied after
it (see ``runtime.quantize``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

#: canonical per-sample shape of each task
CANONICAL_SHAPES: dict[str, tuple[int, ...]] = {
    "digits": (8, 8),
    "appliance": (1460,),
    "activity": (100, 6),
}


def digits_scaled(x: npt.ArrayLike) -> FloatArray:
    """[N, 8, 8] pixel intensities 0..16 -> [N, 8, 8, 1] = x / 16."""
    a = np.asarray(x, dtype=np.float32)
    return (a / np.float32(16.0)).reshape(-1, 8, 8, 1)


TRANSFORMS: dict[str, Callable[[npt.ArrayLike], FloatArray]] = {
    "digits_scaled": digits_scaled,
}


def apply(name: str, x: npt.ArrayLike) -> FloatArray:
    """Apply the named transform to a batch of canonical inputs."""
    try:
        fn = TRANSFORMS[name]
    except KeyError:
        raise KeyError(f"unknown feature transform {name!r}") from None
    return fn(x)
