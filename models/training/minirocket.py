"""A MiniRocket-style transform as a TensorFlow graph (for cloud models).

Dempster et al., "MiniRocket" (KDD 2021): 84 fixed length-9 kernels (weight
-1 everywhere and +2 at 3 of the 9 positions), a geometric set of dilations,
and for each (dilation, kernel) a few bias values taken as quantiles of that
kernel's response on a random training example.  Feature = proportion of
positive values, PPV = mean_t(conv_t > bias).  Differences from the reference
implementation, to keep the graph small and simple: 'same' (zero) padding for
every kernel, and the same number of biases for every (dilation, kernel).

TFLite ops used: CONV_2D (dilated), GREATER, CAST, MEAN, RESHAPE,
CONCATENATION, EXPAND_DIMS (plus whatever the classifier head adds).
"""

from __future__ import annotations

import itertools

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

N_KERNELS = 84


def kernel_weights() -> npt.NDArray[np.float32]:
    """[9, 84]: column k = -1 everywhere, +2 at the k-th 3-subset of 0..8."""
    w = -np.ones((9, N_KERNELS), np.float32)
    for k, idx in enumerate(itertools.combinations(range(9), 3)):
        w[list(idx), k] = 2.0
    return w


def dilations(length: int, max_dilations: int = 32) -> list[int]:
    top = np.log2((length - 1) / 8)
    return [
        int(d)
        for d in np.unique(np.floor(2 ** np.linspace(0, top, max_dilations)).astype(np.int64))
    ]


def _conv(x: tf.Tensor, channels: int, d: int) -> tf.Tensor:
    """x [N, L, C] -> [N, L, 84*C]: every kernel on every channel separately."""
    w = kernel_weights()[:, None, :]  # [9, 1, 84]
    outs = [
        tf.nn.conv1d(x[:, :, c : c + 1], tf.constant(w), stride=1, padding="SAME", dilations=d)
        for c in range(channels)
    ]
    return outs[0] if channels == 1 else tf.concat(outs, axis=-1)


class MiniRocket(keras.layers.Layer):
    """[N, L, C] float -> [N, n_dilations * 84 * C * n_biases] PPV features."""

    def __init__(
        self, dil: list[int], biases: list[npt.NDArray[np.float32]], channels: int, **kwargs: object
    ) -> None:
        super().__init__(trainable=False, **kwargs)
        self.dil = dil
        self.channels = channels
        self.biases = [tf.constant(b[None, None]) for b in biases]  # each [1, 1, 84*C, n_biases]

    def call(self, x: tf.Tensor) -> tf.Tensor:
        feats = []
        for d, b in zip(self.dil, self.biases, strict=True):
            c = _conv(x, self.channels, d)  # [N, L, K]
            ppv = tf.reduce_mean(
                tf.cast(tf.expand_dims(c, -1) > b, tf.float32), axis=1
            )  # [N, K, nb]
            feats.append(tf.reshape(ppv, (-1, b.shape[2] * b.shape[3])))
        return tf.concat(feats, axis=1)


def fit_biases(
    x: npt.NDArray[np.float32], n_biases: int, seed: int = 0, max_dilations: int = 32
) -> tuple[list[int], list[npt.NDArray[np.float32]]]:
    """x [N, L, C] training inputs -> dilations and per-dilation biases [84*C, n_biases]."""
    rng = np.random.default_rng(seed)
    n, length, channels = x.shape
    dil = dilations(length, max_dilations)
    quantiles = (
        np.arange(1, n_biases + 1) * ((np.sqrt(5) + 1) / 2)
    ) % 1  # low-discrepancy, as MiniRocket
    biases = []
    for d in dil:
        examples = rng.integers(n, size=N_KERNELS * channels)
        resp = _conv(tf.constant(x[examples]), channels, d).numpy()  # [K, L, K]
        b = np.stack([np.quantile(resp[k, :, k], quantiles) for k in range(N_KERNELS * channels)])
        biases.append(b.astype(np.float32))
    return dil, biases
