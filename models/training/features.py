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
    out: FloatArray = (a / np.float32(16.0)).reshape(-1, 8, 8, 1)
    return out


def znorm_1d(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per-trace z-normalisation in float64: (x - mean) / max(std, 1e-6), std with ddof=0."""
    a = np.asarray(x, dtype=np.float64)
    z: npt.NDArray[np.float64] = (a - a.mean()) / max(float(a.std()), 1e-6)
    return z


def _sorted_picks(v: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.float64]:
    """n values of sorted(v) at indices round(linspace(0, len(v) - 1, n))."""
    idx = np.round(np.linspace(0.0, len(v) - 1.0, n)).astype(np.int64)
    return np.sort(v)[idx]


def appliance_quantiles_1d(trace: npt.ArrayLike, n: int = 32) -> FloatArray:
    """One power trace (any length >= 2, any unit) -> [3 * n] float32."""
    z = znorm_1d(trace)
    d = np.diff(z)
    v = np.concatenate([_sorted_picks(z, n), _sorted_picks(np.abs(d), n), _sorted_picks(d, n)])
    # signed log with a 0.01 knee: even resolution for small and large values
    # once the model input is quantised to int8 with one scale
    out: FloatArray = (np.sign(v) * np.log1p(np.abs(v) / 0.01)).astype(np.float32)
    return out


def _traces(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """[N, L] or one [L] trace -> [N, L].  Canonical traces have L = 1460; the
    time-split calibration also feeds halves of them."""
    a = np.asarray(x, dtype=np.float32)
    return a.reshape(-1, a.shape[-1])


def appliance_quantiles(x: npt.ArrayLike) -> FloatArray:
    """[N, L] power traces (canonically L = 1460) -> [N, 96]: signed-log (knee 0.01)
    sorted-value quantiles of the z-normalised trace, of its absolute first
    difference and of its first difference (32 each)."""
    a = _traces(x)
    return np.stack([appliance_quantiles_1d(row) for row in a])


def appliance_znorm(x: npt.ArrayLike) -> FloatArray:
    """[N, L] power traces (canonically L = 1460) -> [N, L] z-normalised traces (float32)."""
    a = _traces(x)
    return np.stack([znorm_1d(row).astype(np.float32) for row in a])


def activity_stats(x: npt.ArrayLike) -> FloatArray:
    """[N, 100, 6] (accel xyz, gyro xyz per step) -> [N, 30]: for each of the 6
    channels c (in that order) the 5 statistics mean, std (ddof=0), min, max and
    mean |first difference| over time, laid out channel-major
    (index = 5 * c + s), then signed log: sign(v) * log1p(|v|).  Computed in
    float64, returned as float32."""
    a = np.asarray(x, dtype=np.float64).reshape(-1, *CANONICAL_SHAPES["activity"])
    stats = np.stack(
        [
            a.mean(axis=1),
            a.std(axis=1),
            a.min(axis=1),
            a.max(axis=1),
            np.abs(np.diff(a, axis=1)).mean(axis=1),
        ],
        axis=2,
    )  # [N, 6, 5]
    v = stats.reshape(len(a), -1)
    out: FloatArray = (np.sign(v) * np.log1p(np.abs(v))).astype(np.float32)
    return out


def activity_raw(x: npt.ArrayLike) -> FloatArray:
    """[N, 100, 6] -> [N, 100, 6] unchanged (float32)."""
    out: FloatArray = np.asarray(x, dtype=np.float32).reshape(-1, *CANONICAL_SHAPES["activity"])
    return out


TRANSFORMS: dict[str, Callable[[npt.ArrayLike], FloatArray]] = {
    "digits_scaled": digits_scaled,
    "appliance_quantiles": appliance_quantiles,
    "appliance_znorm": appliance_znorm,
    "activity_stats": activity_stats,
    "activity_raw": activity_raw,
}


def apply(name: str, x: npt.ArrayLike) -> FloatArray:
    """Apply the named transform to a batch of canonical inputs."""
    try:
        fn = TRANSFORMS[name]
    except KeyError:
        raise KeyError(f"unknown feature transform {name!r}") from None
    return fn(x)
