"""Train, convert, calibrate and evaluate one task; write its artefacts."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf
from sklearn.model_selection import StratifiedKFold, train_test_split

from . import cascade, features
from .runtime import TFLiteModel
from .task import Task
from .tflite_export import to_float_tflite, to_int8_tflite

log = logging.getLogger(__name__)


@dataclass
class Trained:
    edge_int8: bytes
    edge_float: bytes
    cloud: bytes


def seed_everything(seed: int = 0) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _predict(blob: bytes, feats: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(blob)
        f.flush()
        return TFLiteModel(f.name).predict(feats)


def _train_models(
    task: Task,
    fe: npt.NDArray[np.float32],
    fc: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    raw: npt.NDArray[np.float32],
) -> Trained:
    log.info("%s: training edge model on %d samples", task.name, len(y))
    edge = task.edge.fit(fe, y, raw)
    edge_float = to_float_tflite(edge)
    edge_int8 = to_int8_tflite(edge, fe)
    return Trained(edge_int8, edge_float, _cloud_tflite(task, fc, y, raw))


def _cloud_tflite(
    task: Task, fc: npt.NDArray[np.float32], y: npt.NDArray[np.int64], raw: npt.NDArray[np.float32]
) -> bytes:
    """Train and convert the cloud model.  For iterating on the edge model only,
    TRAIN_CLOUD_CACHE=<dir> reuses cloud models trained earlier on the same
    samples (keyed by the training data; never set it for a release build)."""
    cache_dir = os.environ.get("TRAIN_CLOUD_CACHE")
    key = hashlib.sha256(fc.tobytes() + y.tobytes()).hexdigest()[:16]
    cached = Path(cache_dir) / f"{task.name}-{key}.tflite" if cache_dir else None
    if cached is not None and cached.exists():
        log.warning("%s: reusing cached cloud model %s", task.name, cached)
        return cached.read_bytes()
    log.info("%s: training cloud model on %d samples", task.name, len(y))
    blob = to_float_tflite(task.cloud.fit(fc, y, raw))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(blob)
    return blob


def _calibration_folds(
    task: Task, y: npt.NDArray[np.int64]
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    idx = np.arange(len(y))
    if task.calibration_folds == 1:
        fit, val = train_test_split(
            idx, test_size=task.holdout_fraction, random_state=0, stratify=y
        )
        return [(np.sort(fit), np.sort(val))]
    skf = StratifiedKFold(n_splits=task.calibration_folds, shuffle=True, random_state=0)
    return [(fit, val) for fit, val in skf.split(idx, y)]


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def save_npz_deterministic(path: Path, **arrays: npt.NDArray[Any]) -> bytes:
    """Like np.savez_compressed, but with fixed zip timestamps so that the
    file (and its sha256) is reproducible.  Readable with np.load."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(info, npy.getvalue())
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def _acc(p: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> float:
    return float(np.mean(p.argmax(axis=1) == y))


#: edge int8, edge float and cloud probabilities
Predictions = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]


def _predict_all(
    m: Trained, fe: npt.NDArray[np.float32], fc: npt.NDArray[np.float32]
) -> Predictions:
    return _predict(m.edge_int8, fe), _predict(m.edge_float, fe), _predict(m.cloud, fc)


def _fold_predictions(
    task: Task,
    raw: npt.NDArray[np.float32],
    fe: npt.NDArray[np.float32],
    fc: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
) -> tuple[
    npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32], Trained | None
]:
    """Edge int8, edge float and cloud probabilities of every training sample
    from models that did not see it (rows of samples never held out: NaN).
    With a single hold-out, also returns those models (they become final)."""
    n_classes = len(task.classes)
    folds = _calibration_folds(task, y)
    out = [np.full((len(y), n_classes), np.nan, np.float32) for _ in range(3)]
    m: Trained | None = None
    for k, (fit_idx, val_idx) in enumerate(folds):
        log.info(
            "%s: calibration fold %d/%d (fit %d, validate %d)",
            task.name,
            k + 1,
            len(folds),
            len(fit_idx),
            len(val_idx),
        )
        m = _train_models(task, fe[fit_idx], fc[fit_idx], y[fit_idx], raw[fit_idx])
        for whole, part in zip(out, _predict_all(m, fe[val_idx], fc[val_idx]), strict=True):
            whole[val_idx] = part
    return out[0], out[1], out[2], m if task.calibration_folds == 1 else None


def _time_split_predictions(
    task: Task, raw: npt.NDArray[np.float32], y: npt.NDArray[np.int64]
) -> Predictions:
    """Probabilities for the 2N half-sequences of the N training sequences
    (first halves, then second halves), each from models fitted on the other
    halves of all N sequences.

    A validation set of seen instances: the archive's test split records the
    same appliances again, so held-out *instances* (k-fold) are a harder,
    differently calibrated validation set than the test split."""
    half = raw.shape[1] // 2
    parts = [raw[:, :half], raw[:, raw.shape[1] - half :]]
    preds: list[list[npt.NDArray[np.float32]]] = [[], [], []]
    for k, (fit_raw, val_raw) in enumerate([(parts[1], parts[0]), (parts[0], parts[1])]):
        log.info(
            "%s: calibration time split %d/2 (fit %d %s halves, validate the %s halves)",
            task.name,
            k + 1,
            len(y),
            ("second", "first")[k],
            ("first", "second")[k],
        )
        fe = features.apply(task.edge.features, fit_raw)
        fc = features.apply(task.cloud.features, fit_raw)
        m = _train_models(task, fe, fc, y, fit_raw)
        ve = features.apply(task.edge.features, val_raw)
        vc = features.apply(task.cloud.features, val_raw)
        for kind, part in zip(preds, _predict_all(m, ve, vc), strict=True):
            kind.append(part)
    e, ef, c = (np.concatenate(p) for p in preds)
    return e, ef, c


def run(task: Task) -> dict[str, Any]:
    """Everything except writing the card/manifest/plot; returns the report dict
    and the model blobs under key '_blobs'."""
    seed_everything(0)
    split = task.load()
    assert split.classes == task.classes, (split.classes, task.classes)
    y = split.y_train
    fe = features.apply(task.edge.features, split.x_train)
    fc = features.apply(task.cloud.features, split.x_train)

    # --- calibration: predictions on training data held out from fitting
    if task.calibration_time_split:
        val_edge, val_edge_float, val_cloud = _time_split_predictions(task, split.x_train, y)
        y_val = np.concatenate([y, y])  # first halves, then second halves
        fold_models: Trained | None = None
        method = "half-sequence time-split"
    else:
        val_edge, val_edge_float, val_cloud, fold_models = _fold_predictions(
            task, split.x_train, fe, fc, y
        )
        y_val = y
        method = (
            "stratified hold-out"
            if task.calibration_folds == 1
            else f"stratified {task.calibration_folds}-fold out-of-fold"
        )
    val_mask = ~np.isnan(val_edge[:, 0])
    yv = y_val[val_mask]
    val_rows = cascade.sweep(val_edge[val_mask], val_cloud[val_mask], yv)
    chosen = cascade.choose_threshold(val_rows, task.offload_budget)
    threshold = chosen["threshold"]
    log.info(
        "%s: validation -> threshold %.4f (val cascade %.4f, offload %.3f)",
        task.name,
        threshold,
        chosen["cascade_accuracy"],
        chosen["offload_share"],
    )

    # --- final models
    if fold_models is not None:
        final = fold_models  # the calibrated models themselves (trained on the fit part)
        final_train_n = len(y) - int(val_mask.sum())
    else:
        seed_everything(0)
        final = _train_models(task, fe, fc, y, split.x_train)
        final_train_n = len(y)

    # --- test evaluation through the runtime, exactly as the agent does
    te_e = features.apply(task.edge.features, split.x_test)
    te_c = features.apply(task.cloud.features, split.x_test)
    yt = split.y_test
    p_int8, p_float, p_cloud = _predict_all(final, te_e, te_c)
    test_rows = cascade.sweep(p_int8, p_cloud, yt)
    pred, off = cascade.cascade_predict(p_int8, p_cloud, threshold)

    report: dict[str, Any] = {
        "task": task.name,
        "version": task.version,
        "threshold": threshold,
        "offload_budget_validation": task.offload_budget,
        "offload_goal_test": task.offload_goal,
        "calibration": {
            "method": method,
            "holdout_fraction": task.holdout_fraction if fold_models is not None else None,
            "n_validation": int(val_mask.sum()),
            "edge_int8_accuracy": _acc(val_edge[val_mask], yv),
            "edge_float_accuracy": _acc(val_edge_float[val_mask], yv),
            "cloud_accuracy": _acc(val_cloud[val_mask], yv),
            "cascade_accuracy": chosen["cascade_accuracy"],
            "offload_share": chosen["offload_share"],
        },
        "n_train_final_models": final_train_n,
        "test": {
            "n": len(yt),
            "edge_float_accuracy": _acc(p_float, yt),
            "edge_int8_accuracy": _acc(p_int8, yt),
            "cloud_accuracy": _acc(p_cloud, yt),
            "int8_float_agreement": float(np.mean(p_int8.argmax(1) == p_float.argmax(1))),
            "cascade_accuracy": float(np.mean(pred == yt)),
            "offload_share": float(np.mean(off)),
        },
        "sweep_validation": val_rows,
        "sweep_test": test_rows,
    }
    report["canonical_shape"] = list(split.x_test.shape[1:])
    report["_blobs"] = final
    report["_testset"] = (split.x_test.astype(np.float32), yt.astype(np.int64))
    report["_input_shapes"] = (list(te_e.shape[1:]), list(te_c.shape[1:]))
    log.info("%s: test %s", task.name, json.dumps(report["test"]))
    return report
