"""What a task is: data, labels, feature transforms, model builders, budgets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import numpy.typing as npt

from .data import Split

#: (model inputs [N, ...], labels [N], canonical inputs [N, ...]) -> trained
#: Keras model with a softmax output.  The canonical inputs are there for
#: augmentations that must be applied before the feature transform.
Fit = Callable[
    [npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.float32]], keras.Model
]


@dataclass(frozen=True)
class ModelPlan:
    features: str  # name of the transform in features.TRANSFORMS
    fit: Fit
    architecture: str  # one paragraph for the card


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    labels: list[str]  # human names, index i = model output i
    classes: list[str]  # raw dataset class values, same order
    load: Callable[[], Split]
    edge: ModelPlan
    cloud: ModelPlan
    offload_budget: float  # max offload share allowed when choosing the threshold on validation
    offload_goal: float  # goal on the test split (reported)
    calibration_folds: (
        int  # 1 = single stratified hold-out of `holdout_fraction`; k > 1 = k-fold out-of-fold
    )
    holdout_fraction: float = 0.2
    #: True: calibrate on a time split instead (sequence tasks): models fitted on
    #: the first half of every training sequence are validated on the second
    #: half and vice versa -- seen instances, unseen stretches of time.
    #: `calibration_folds` is then ignored.
    calibration_time_split: bool = False
    data_source: str = ""
    data_license: str = ""
    label_notes: str = ""
    feature_notes: dict[str, str] = field(default_factory=dict)
    caveats: str = ""
    version: str = "1.0.0"
