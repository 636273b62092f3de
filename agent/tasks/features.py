"""Feature transforms named by the model manifest (`input.features`): canonical batch in,
model input batch out. Pure numpy; the training code under models/ uses the same formulas."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from agent.tasks.base import FloatArray

Feature = Callable[[FloatArray], FloatArray]


def digits_scaled(x: FloatArray) -> FloatArray:
    """[N, 8, 8] intensities 0..16 -> [N, 8, 8, 1] in 0..1."""
    return np.asarray(x.reshape(-1, 8, 8, 1) / np.float32(16.0), dtype=np.float32)


def identity(x: FloatArray) -> FloatArray:
    return x


def _znorm(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Per-row z-normalisation (population std, floored at 1e-6)."""
    mean = x.mean(axis=1, keepdims=True)
    std = np.maximum(x.std(axis=1, keepdims=True), 1e-6)
    return np.asarray((x - mean) / std, dtype=np.float64)


def _signed_log(v: npt.NDArray[np.float64], knee: float = 1.0) -> FloatArray:
    """sign(v) * log1p(|v| / knee): compresses large values, keeps small ones apart."""
    return np.asarray(np.sign(v) * np.log1p(np.abs(v) / knee), dtype=np.float32)


def _picks(v: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.float64]:
    """n order statistics per row: sort(v)[round(linspace(0, len - 1, n))]."""
    idx = np.round(np.linspace(0.0, v.shape[1] - 1.0, n)).astype(np.int64)
    return np.sort(v, axis=1)[:, idx]


def appliance_quantiles(x: FloatArray) -> FloatArray:
    """[N, 1460] power traces -> [N, 96]: signed-log (knee 0.01) order statistics (32 each) of the
    z-normalised trace, of its absolute first difference and of its first difference."""
    z = _znorm(x.reshape(x.shape[0], -1).astype(np.float64))
    d = np.diff(z, axis=1)
    picks = np.concatenate([_picks(z, 32), _picks(np.abs(d), 32), _picks(d, 32)], axis=1)
    # a 0.01 knee gives small and large values even resolution once quantised to int8
    return _signed_log(picks, knee=0.01)


def appliance_znorm(x: FloatArray) -> FloatArray:
    """[N, 1460] power traces -> [N, 1460] z-normalised per trace."""
    return np.asarray(_znorm(x.reshape(x.shape[0], -1).astype(np.float64)), dtype=np.float32)


def activity_stats(x: FloatArray) -> FloatArray:
    """[N, 100, 6] -> [N, 30]: per channel mean, std, min, max, mean |first difference|
    (channel-major), signed log."""
    a = x.reshape(x.shape[0], 100, 6).astype(np.float64)
    stats = np.stack(
        [a.mean(1), a.std(1), a.min(1), a.max(1), np.abs(np.diff(a, axis=1)).mean(1)], axis=2
    )
    return _signed_log(stats.reshape(a.shape[0], -1))


FEATURES: dict[str, Feature] = {
    "identity": identity,
    "digits_scaled": digits_scaled,
    "appliance_quantiles": appliance_quantiles,
    "appliance_znorm": appliance_znorm,
    "activity_stats": activity_stats,
    "activity_raw": identity,
}
