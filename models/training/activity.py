"""Task `activity`: BasicMotions smart-watch accelerometer + gyroscope."""

from __future__ import annotations

import keras
import numpy as np
import numpy.typing as npt
from keras import layers
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from .data import load_activity_split
from .minirocket import MiniRocket, fit_biases
from .task import ModelPlan, Task

CLASSES = [
    "badminton",
    "running",
    "standing",
    "walking",
]  # sorted raw values, as np.unique orders them
LABELS = ["Badminton", "Running", "Standing", "Walking"]


def fit_edge(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], raw: npt.NDArray[np.float32]
) -> keras.Model:
    del raw
    norm = layers.Normalization(name="standardize")
    norm.adapt(x)
    inp = keras.Input((x.shape[1],), name="features")
    h = layers.Dense(32, activation="relu")(norm(inp))
    h = layers.Dropout(0.2)(h)
    out = layers.Dense(len(CLASSES), activation="softmax", name="proba")(h)
    model = keras.Model(inp, out, name="activity_edge")
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=150, batch_size=8, shuffle=True, verbose=2)
    return model


def fit_cloud(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], raw: npt.NDArray[np.float32]
) -> keras.Model:
    del raw
    dil, biases = fit_biases(x, n_biases=2, seed=0)
    inp = keras.Input(x.shape[1:], name="imu")
    feats = MiniRocket(dil, biases, channels=x.shape[2], name="minirocket")(inp)
    f = keras.Model(inp, feats).predict(x, batch_size=8, verbose=0)
    scaler = StandardScaler().fit(f)
    clf = LogisticRegressionCV(
        Cs=[0.01, 0.1, 1.0],
        cv=StratifiedKFold(4, shuffle=True, random_state=0),
        max_iter=5000,
        l1_ratios=(0.0,),
        scoring="accuracy",
        use_legacy_attributes=False,
    ).fit(scaler.transform(f), y)
    print(f"cloud: {f.shape[1]} MiniRocket features, logistic regression C={clf.C_}")
    w = (clf.coef_ / scaler.scale_).T.astype(np.float32)
    b = (clf.intercept_ - (scaler.mean_ / scaler.scale_) @ clf.coef_.T).astype(np.float32)
    head = layers.Dense(len(CLASSES), activation="softmax", name="proba")
    out = head(feats)
    head.set_weights([w, b])
    return keras.Model(inp, out, name="activity_cloud")


TASK = Task(
    name="activity",
    title="Activity recognition from a 10 s smart-watch IMU window (BasicMotions)",
    labels=LABELS,
    classes=CLASSES,
    load=lambda: load_activity_split(CLASSES),
    edge=ModelPlan(
        "activity_stats",
        fit_edge,
        "MLP on 30 summary statistics (6 channels x mean/std/min/max/mean|diff|, signed log): Normalization "
        "(training mean/variance) -> Dense(32,ReLU) -> Dropout(0.2) -> Dense(4) -> Softmax. Adam 3e-3, 150 epochs, batch 8.",
    ),
    cloud=ModelPlan(
        "activity_raw",
        fit_cloud,
        "Multivariate MiniRocket-style transform in the graph (84 fixed length-9 kernels applied to each of the 6 channels "
        "separately x geometric dilations x 2 biases from quantiles of training responses, 'same' padding, "
        "PPV = mean(conv > bias)) -> standardisation folded into a linear layer -> Softmax; the linear layer is a "
        "multinomial logistic regression (scikit-learn, C chosen from {0.01, 0.1, 1} by 4-fold CV on the training data).",
    ),
    offload_budget=0.08,
    offload_goal=0.10,
    calibration_folds=5,
    data_source="BasicMotions from the UEA multivariate time-series classification archive (as shipped in sktime: "
    "`load_UCR_UEA_dataset('BasicMotions')`): 4 students each recorded 4 activities 5 times with a smart watch, "
    "10 s at 10 Hz; 6 dimensions (1-3 accelerometer x/y/z, 4-6 gyroscope x/y/z). Archive train/test split 40/40 "
    "(10 per class each). The archive stores each case as [6 dims, 100 steps]; the canonical form is its transpose.",
    data_license="UEA archive: free for research use, cite the archive (Bagnall et al. 2018, arXiv:1811.00075); "
    "no explicit licence is attached to the recordings.",
    label_notes="Raw class values are the archive's lower-case strings, in sorted order; the archive header lists "
    "them as 'Standing Running Walking Badminton'. 'standing' is called 'resting' in the archive description.",
)
