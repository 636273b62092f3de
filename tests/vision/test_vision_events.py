"""Events on top of results: person start/update/end, reps, falls. Pure logic with synthetic
keypoints, plus two checks on MoveNet's real output for the shared images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent import imaging
from agent.runtime.tflite import TFLiteModel
from agent.vision import pose
from agent.vision.config import FallConfig, PersonEventsConfig, RepsConfig
from agent.vision.events import FallDetector, PersonTracker, RepCounter, knee_angle, torso
from tests.vision.conftest import MOVENET, image_bytes


def _tracker(**kw: object) -> PersonTracker:
    return PersonTracker("hall", PersonEventsConfig.model_validate(kw))


def test_person_events_follow_start_update_end() -> None:
    tracker = _tracker(min_frames=2, end_frames=3, update_interval_s=1.0)
    seq = [False, True, False, True, True, True, True, True, False, True, False, False, False]
    events = []
    for i, present in enumerate(seq):
        event = tracker.update(present, 0.5 + i / 100, [0.1, 0.1, 0.5, 0.9], 100.0 + i * 0.5)
        if event is not None:
            events.append(event)
    assert [e.type for e in events] == ["start", "update", "update", "end"]
    start, end = events[0], events[-1]
    assert start.after["id"] == end.after["id"] and start.before == start.after
    assert start.snapshot and start.after["active"] and start.after["end_time"] is None
    assert end.before["active"] and not end.after["active"]
    assert end.after["end_time"] == 106.0
    assert end.after["top_score"] == pytest.approx(0.59)
    assert not tracker.present


def test_a_single_flicker_is_not_an_event() -> None:
    tracker = _tracker(min_frames=2)
    assert [tracker.update(p, 0.6, None, float(i)) for i, p in enumerate([True, False] * 5)] == [
        None
    ] * 10


def test_close_ends_an_open_event() -> None:
    tracker = _tracker(min_frames=1)
    assert tracker.update(True, 0.7, None, 1.0) is not None
    event = tracker.close(2.0)
    assert event is not None and event.type == "end" and tracker.close(3.0) is None


def _body(angle_deg: float, hip_y: float = 0.5, score: float = 0.9) -> np.ndarray:
    """Keypoints of a side view: thigh horizontal-ish when squatting, shin vertical."""
    kp = np.zeros((17, 3), dtype=np.float32)
    knee = np.array([0.5, hip_y + 0.2])
    ankle = knee + np.array([0.0, 0.2])
    rad = np.radians(angle_deg)
    hip = knee + 0.2 * np.array([np.sin(rad), np.cos(rad)])  # the angle at the knee
    for i, point in ((11, hip), (12, hip), (13, knee), (14, knee), (15, ankle), (16, ankle)):
        kp[i] = [point[0], point[1], score]
    kp[5] = kp[6] = [hip[0], hip[1] - 0.25, score]
    return kp


def test_knee_angle_and_rep_counting() -> None:
    assert knee_angle(_body(170), 0.3) == pytest.approx(170, abs=0.5)
    assert knee_angle(_body(90), 0.3) == pytest.approx(90, abs=0.5)
    assert knee_angle(_body(90, score=0.1), 0.3) is None
    reps = RepCounter(RepsConfig.model_validate({"enabled": True}))
    angles = [170, 150, 120, 100, 90, 120, 160, 170, 165, 100, 95, 140, 158, 170, 130, 170]
    done = [reps.update(_body(a)) for a in angles]
    assert reps.count == 2 and done.count(True) == 2  # the shallow dip to 130 is no rep
    assert not reps.update(None)


def test_the_squat_image_is_down(pretrained: Path) -> None:
    model = TFLiteModel(pretrained / MOVENET)
    bgr = imaging.decode_bgr(image_bytes("squat.bmp"), 10**8)
    target = imaging.ModelInput(192, 192)
    target.fill(bgr)
    kp = pose.keypoints(model.predict(target.rgb[None])[0])
    angle = knee_angle(kp, 0.3, bgr.shape[1] / bgr.shape[0])
    assert angle is not None and angle <= RepsConfig().down_angle  # type: ignore[call-arg]


def _lying(cy: float) -> np.ndarray:
    kp = np.zeros((17, 3), dtype=np.float32)
    kp[5] = kp[6] = [0.3, cy, 0.9]
    kp[11] = kp[12] = [0.6, cy + 0.02, 0.9]
    return kp


def _standing(cy: float) -> np.ndarray:
    kp = np.zeros((17, 3), dtype=np.float32)
    kp[5] = kp[6] = [0.5, cy - 0.15, 0.9]
    kp[11] = kp[12] = [0.5, cy + 0.15, 0.9]
    return kp


def test_fall_needs_a_drop_then_lying_still() -> None:
    fall = FallDetector(FallConfig.model_validate({"enabled": True, "horizontal_s": 2.0}))
    t, out = 0.0, []
    for cy in (0.4, 0.4, 0.45, 0.55, 0.7):  # falling
        out.append(fall.update(_standing(cy) if cy < 0.7 else _lying(cy), t))
        t += 0.3
    for _ in range(10):  # lying on the floor
        out.append(fall.update(_lying(0.72), t))
        t += 0.3
    assert out.count("fall") == 1
    assert fall.update(_standing(0.4), t) == "recovered"


def test_lying_down_slowly_is_not_a_fall() -> None:
    fall = FallDetector(FallConfig.model_validate({"enabled": True, "window_s": 1.0}))
    t = 0.0
    for cy in np.linspace(0.4, 0.7, 20):  # over 10 s
        assert fall.update(_standing(float(cy)), t) is None
        t += 0.5
    for _ in range(10):
        assert fall.update(_lying(0.72), t) is None
        t += 0.5


def test_real_poses_upright_and_lying(pretrained: Path) -> None:
    """MoveNet on squat.bmp: the torso is upright; rotated 90 degrees, it is horizontal."""
    model = TFLiteModel(pretrained / MOVENET)
    bgr = imaging.decode_bgr(image_bytes("squat.bmp"), 10**8)
    for image, horizontal in ((bgr, False), (np.ascontiguousarray(np.rot90(bgr)), True)):
        target = imaging.ModelInput(192, 192, "letterbox")
        placement = target.fill(image)
        kp = pose.keypoints(model.predict(target.rgb[None])[0], placement)
        seen = torso(kp, 0.3, image.shape[1] / image.shape[0])
        assert seen is not None and seen[2] is horizontal
