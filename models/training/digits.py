"""Task `digits`: sklearn 8x8 handwritten digits."""

from __future__ import annotations

import keras
import numpy as np
import numpy.typing as npt
from keras import layers

from .data import load_digits_split
from .task import ModelPlan, Task


def _shift_augment(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Original images plus copies shifted by one pixel in the 4 directions (zero fill)."""
    xs, ys = [x], [y]
    for axis, step in ((1, 1), (1, -1), (2, 1), (2, -1)):
        s = np.roll(x, step, axis=axis)
        if axis == 1:
            s[:, 0 if step == 1 else -1, :, :] = 0.0
        else:
            s[:, :, 0 if step == 1 else -1, :] = 0.0
        xs.append(s)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _cnn(widths: tuple[int, int, int], dense: int, dropout: float, name: str) -> keras.Model:
    inp = keras.Input((8, 8, 1), name="pixels")
    x = layers.Conv2D(widths[0], 3, padding="same", activation="relu")(inp)
    x = layers.Conv2D(widths[1], 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(widths[2], 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    if dense:
        x = layers.Dense(dense, activation="relu")(x)
    x = layers.Dropout(dropout)(x)
    out = layers.Dense(10, activation="softmax", name="proba")(x)
    return keras.Model(inp, out, name=name)


def _train(
    model: keras.Model, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], epochs: int
) -> keras.Model:
    xa, ya = _shift_augment(x, y)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(xa, ya, epochs=epochs, batch_size=64, shuffle=True, verbose=2)
    return model


def fit_edge(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], raw: npt.NDArray[np.float32]
) -> keras.Model:
    return _train(_cnn((16, 32, 32), 0, 0.3, "digits_edge"), x, y, epochs=40)


def fit_cloud(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], raw: npt.NDArray[np.float32]
) -> keras.Model:
    members = [
        _train(_cnn((32, 64, 128), 128, 0.4, f"member{i}"), x, y, epochs=40) for i in range(3)
    ]
    inp = keras.Input((8, 8, 1), name="pixels")
    out = layers.Average(name="proba")([m(inp) for m in members])
    return keras.Model(inp, out, name="digits_cloud")


TASK = Task(
    name="digits",
    title="Handwritten digit (8x8) classification",
    labels=[str(i) for i in range(10)],
    classes=[str(i) for i in range(10)],
    load=load_digits_split,
    edge=ModelPlan(
        "digits_scaled",
        fit_edge,
        "CNN: Conv2D(16,3x3,same,ReLU) -> Conv2D(32,3x3,same,ReLU) -> MaxPool 2x2 -> "
        "Conv2D(32,3x3,same,ReLU) -> MaxPool 2x2 -> Flatten(128) -> Dropout(0.3) -> Dense(10) -> Softmax. "
        "Adam 1e-3, 40 epochs, batch 64, training set augmented with 1-pixel shifts (4 directions, zero fill).",
    ),
    cloud=ModelPlan(
        "digits_scaled",
        fit_cloud,
        "Average of the softmax outputs of 3 CNNs, each Conv2D(32) -> Conv2D(64) -> MaxPool -> Conv2D(128) -> MaxPool -> "
        "Flatten -> Dense(128,ReLU) -> Dropout(0.4) -> Dense(10) -> Softmax (3x3 kernels, same padding, ReLU), "
        "trained like the edge model with different initialisations.",
    ),
    offload_budget=0.07,
    offload_goal=0.10,
    calibration_folds=1,
    data_source="scikit-learn `load_digits()` (UCI Optical Recognition of Handwritten Digits, 1797 8x8 images, 43 writers). "
    "Train/test: `train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)` -> 1347 train / 450 test.",
    data_license="UCI ML repository dataset, CC BY 4.0 (Alpaydin & Kaynak, 1998); shipped with scikit-learn (BSD-3-Clause).",
    label_notes="Class i is the digit i.",
)
