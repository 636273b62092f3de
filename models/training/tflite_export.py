"""Keras -> TFLite conversion (float32 and full-integer int8)."""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf


def _converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    # from_keras_model freezes the Keras 3 variables; a hand-made concrete
    # function keeps READ_VARIABLE ops that fail during int8 calibration.
    return tf.lite.TFLiteConverter.from_keras_model(model)


def to_float_tflite(model: keras.Model) -> bytes:
    conv = _converter(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return bytes(conv.convert())


def to_int8_tflite(model: keras.Model, representative: npt.NDArray[np.float32]) -> bytes:
    """Full-integer quantisation; ``representative`` = model inputs [N, ...]
    taken from the training data (all of them, in order: deterministic)."""

    def rep() -> Iterator[list[npt.NDArray[np.float32]]]:
        for sample in representative:
            yield [sample[None].astype(np.float32)]

    conv = _converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return bytes(conv.convert())
