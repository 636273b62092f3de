"""Pre-processing against MoveNet's reference: resize vs letterbox, reduced-size decode,
and the mapping of keypoints back to the source image. Real model, no MQTT."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from agent import imaging
from agent.runtime.tflite import TFLiteModel
from agent.vision import pose
from tests.vision.conftest import MOVENET, image_bytes


def _max_error(pretrained: Path, mode: str) -> float:
    model = TFLiteModel(pretrained / MOVENET, num_threads=1)
    bgr = imaging.decode_bgr(image_bytes("squat.bmp"), 10**8)
    target = imaging.ModelInput(192, 192, mode)
    placement = target.fill(bgr)
    kp = pose.keypoints(model.predict(target.rgb[np.newaxis])[0], placement)
    path = pretrained / "movenet_single_pose_lightning_ptq_reference.csv"
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    errors = [
        max(abs(kp[i, 0] - float(r["keypoint_x"])), abs(kp[i, 1] - float(r["keypoint_y"])))
        for i, r in enumerate(rows)
        if float(r["keypoint_score"]) >= 0.3
    ]
    return float(max(errors))


def test_stretch_matches_the_reference_better_than_letterbox(pretrained: Path) -> None:
    """The reference was made with a plain resize: stretch is the default (max error
    about 0.03); letterbox (kept for wide frames) is within 0.05 too."""
    stretch, letterbox = _max_error(pretrained, "stretch"), _max_error(pretrained, "letterbox")
    assert stretch < 0.035
    assert letterbox < 0.05
    assert stretch < letterbox


def test_reduce_factor_never_upscales() -> None:
    assert imaging.reduce_factor(1280, 720, 192, 192) == 2
    assert imaging.reduce_factor(1280, 720, 128, 128) == 4
    assert imaging.reduce_factor(1920, 1080, 224, 224) == 4
    assert imaging.reduce_factor(500, 610, 192, 192) == 2
    assert imaging.reduce_factor(200, 200, 192, 192) == 1


def test_reduced_decode_is_cheaper_and_keeps_the_answer(pretrained: Path) -> None:
    import time

    data = image_bytes("cat_720p.jpg")
    full = imaging.decode_bgr(data, 10**8)
    half = imaging.decode_bgr(data, 10**8, reduce=2)
    assert full.shape == (720, 1280, 3) and half.shape == (360, 640, 3)

    def best(reduce: int) -> float:
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            imaging.ModelInput(192, 192).fill(imaging.decode_bgr(data, 10**8, reduce=reduce))
            times.append(time.perf_counter() - t0)
        return min(times)

    assert best(2) < best(1)
    model = TFLiteModel(pretrained / MOVENET)
    scores = []
    for image in (full, half):
        target = imaging.ModelInput(192, 192)
        target.fill(image)
        scores.append(pose.presence_score(pose.keypoints(model.predict(target.rgb[None])[0])))
    assert max(scores) < 0.4  # a cat either way


def test_letterbox_placement_maps_keypoints_back() -> None:
    target = imaging.ModelInput(192, 192, "letterbox")
    wide = np.zeros((360, 640, 3), dtype=np.uint8)
    placement = target.fill(wide)
    assert placement.left == 0.0 and placement.width == 1.0
    assert placement.top == pytest.approx(42 / 192) and placement.height == pytest.approx(108 / 192)
    # the model's centre is the image's centre; the top of the picture is y = 0
    raw = np.zeros((17, 3), dtype=np.float32)
    raw[:, 0] = 42 / 192  # y
    raw[:, 1] = 0.5  # x
    kp = pose.keypoints(raw, placement)
    assert kp[0, 0] == pytest.approx(0.5) and kp[0, 1] == pytest.approx(0.0, abs=1e-6)


def test_model_input_reuses_its_buffers() -> None:
    target = imaging.ModelInput(192, 192)
    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    first = target.rgb
    target.fill(frame)
    target.fill(frame)
    assert target.rgb is first and len(target._scratch) == 1
