"""Edge/cloud cascade evaluation and threshold calibration (numpy only)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: threshold candidates: 0, the midpoints between the 256 int8 output levels
#: (so no threshold equals a dequantised probability exactly), and 1.0
CANDIDATE_THRESHOLDS: list[float] = sorted(
    {0.0, 1.0, *(round((k + 0.5) / 256.0, 4) for k in range(256))}
)


def cascade_predict(
    edge_proba: npt.NDArray[np.float32],
    cloud_proba: npt.NDArray[np.float32],
    threshold: float,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Edge answers when its top probability >= threshold, else the cloud does.

    Predicted class = first index of the maximum (np.argmax).
    """
    offload = edge_proba.max(axis=1) < np.float32(threshold)
    pred = np.where(offload, cloud_proba.argmax(axis=1), edge_proba.argmax(axis=1))
    return pred.astype(np.int64), offload


def sweep(
    edge_proba: npt.NDArray[np.float32],
    cloud_proba: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    thresholds: list[float] | None = None,
) -> list[dict[str, float]]:
    rows = []
    for t in thresholds if thresholds is not None else CANDIDATE_THRESHOLDS:
        pred, offload = cascade_predict(edge_proba, cloud_proba, t)
        rows.append(
            {
                "threshold": float(t),
                "cascade_accuracy": float(np.mean(pred == y)),
                "offload_share": float(np.mean(offload)),
            }
        )
    return rows


def choose_threshold(rows: list[dict[str, float]], budget: float) -> dict[str, float]:
    """Among thresholds whose offload share is <= budget, take the highest
    cascade accuracy; ties go to the smallest offload share (then the lowest
    threshold)."""
    ok = [r for r in rows if r["offload_share"] <= budget]
    return sorted(ok, key=lambda r: (-r["cascade_accuracy"], r["offload_share"], r["threshold"]))[0]
