"""Dataset loading into the canonical input form of each task.

Canonical inputs are float32 per sample; labels are int64 indices into the
task's class list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Split:
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]
    classes: list[str]


def load_digits_split() -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32)  # [1797, 8, 8], 0..16
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return Split(x_tr, y_tr, x_te, y_te, [str(c) for c in d.target_names])


def _load_ucr(
    name: str,
) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.str_], npt.NDArray[np.float64], npt.NDArray[np.str_]
]:
    from sktime.datasets import load_UCR_UEA_dataset

    x_tr, y_tr = load_UCR_UEA_dataset(name, split="train", return_X_y=True, return_type="numpy3D")
    x_te, y_te = load_UCR_UEA_dataset(name, split="test", return_X_y=True, return_type="numpy3D")
    return x_tr, np.asarray(y_tr).astype(str), x_te, np.asarray(y_te).astype(str)


def _encode(y: npt.NDArray[np.str_], classes: list[str]) -> npt.NDArray[np.int64]:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in y], dtype=np.int64)


def load_appliance_split(classes: list[str]) -> Split:
    """ACSF1: [N, 1, 1460] -> canonical [N, 1460]."""
    x_tr, y_tr, x_te, y_te = _load_ucr("ACSF1")
    return Split(
        x_tr[:, 0, :].astype(np.float32),
        _encode(y_tr, classes),
        x_te[:, 0, :].astype(np.float32),
        _encode(y_te, classes),
        classes,
    )


def load_activity_split(classes: list[str]) -> Split:
    """BasicMotions: [N, 6, 100] (dims 1-3 accel xyz, 4-6 gyro xyz) ->
    canonical [N, 100, 6] (time-major)."""
    x_tr, y_tr, x_te, y_te = _load_ucr("BasicMotions")
    return Split(
        np.transpose(x_tr, (0, 2, 1)).astype(np.float32),
        _encode(y_tr, classes),
        np.transpose(x_te, (0, 2, 1)).astype(np.float32),
        _encode(y_te, classes),
        classes,
    )
