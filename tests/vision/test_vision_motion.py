"""Motion gating: pure logic on synthetic frames, with the frame times given."""

from __future__ import annotations

import numpy as np

from agent.vision.config import MotionConfig
from agent.vision.motion import MotionGate


def _scene(box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    frame = np.full((360, 640, 3), 80, dtype=np.uint8)
    if box is not None:
        x, y, w, h = box
        frame[y : y + h, x : x + w] = 230
    return frame


def _gate(**kw: object) -> MotionGate:
    return MotionGate(MotionConfig.model_validate({"hold_s": 0, "refresh_s": 0, **kw}))


def test_a_still_scene_is_skipped_and_movement_is_analysed() -> None:
    gate = _gate()
    t = 0.0
    assert gate.check(_scene(), t)  # the first frame is news
    for _ in range(20):
        t += 0.1
        assert not gate.check(_scene(), t)
    t += 0.1
    assert gate.check(_scene((300, 100, 80, 160)), t)  # someone appears
    snap = gate.snapshot()
    assert snap["frames"] == 22 and snap["analysed"] == 2 and snap["skipped"] == 20
    assert snap["skipped_share"] == round(20 / 22, 4)


def test_masked_regions_are_ignored() -> None:
    gate = _gate(masks=[(0.0, 0.0, 0.5, 1.0)])  # the left half: a TV
    gate.check(_scene(), 0.0)
    assert not gate.check(_scene((50, 100, 200, 160)), 0.1)  # change inside the mask
    assert gate.check(_scene((450, 100, 120, 160)), 0.2)  # change outside it


def test_small_changes_and_noise_stay_below_min_area() -> None:
    gate = _gate(min_area=0.01)
    gate.check(_scene(), 0.0)
    rng = np.random.default_rng(1)
    noisy = np.clip(_scene().astype(int) + rng.integers(-6, 7, (360, 640, 3)), 0, 255)
    assert not gate.check(noisy.astype(np.uint8), 0.1)  # sensor noise
    assert not gate.check(_scene((10, 10, 20, 20)), 0.2)  # a fly


def test_hold_and_refresh() -> None:
    gate = _gate(hold_s=1.0, refresh_s=5.0)
    gate.check(_scene(), 0.0)
    assert gate.check(_scene(), 0.5)  # within hold after the first frame
    assert not gate.check(_scene(), 1.5)
    assert not gate.check(_scene(), 4.9)
    assert gate.check(_scene(), 5.6)  # refresh: re-read a still scene now and then
    assert not gate.check(_scene(), 6.0)


def test_disabled_gate_analyses_everything() -> None:
    gate = _gate(enabled=False)
    assert all(gate.check(_scene(), t / 10) for t in range(5))
    assert gate.snapshot()["skipped"] == 0
