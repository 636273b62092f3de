"""Events on top of per-frame results. Pure logic: frames in, events out (tested with fakes).

- `PersonTracker`: a person enters / stays / leaves a camera's view, in Frigate's pattern:
  one event id with `start`, `update`s, and `end`, each message carrying `before` and
  `after` states. Debounced: `min_frames` analysed frames with a person to start,
  `end_frames` without to end.
- `RepCounter`: squats from the knee angle (hip-knee-ankle): down at or below `down_angle`,
  a rep when the person stands again (at or above `up_angle`).
- `FallDetector`: the torso centre drops by `drop` (share of the image height) within
  `window_s` and the body then stays horizontal for `horizontal_s`.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.vision.config import FallConfig, PersonEventsConfig, RepsConfig
from agent.vision.pose import Keypoints

# keypoint indices (MoveNet / COCO order)
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 5, 6, 11, 12
L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 13, 14, 15, 16


@dataclass
class PersonEvent:
    type: str  # start | update | end
    before: dict[str, Any]
    after: dict[str, Any]
    snapshot: bool = False  # publish a snapshot of this frame with the event

    def payload(self) -> dict[str, Any]:
        return {"type": self.type, "before": self.before, "after": self.after}


@dataclass
class _Track:
    id: str
    start_time: float
    score: float
    top_score: float
    box: list[float] | None
    frames: int = 1
    end_time: float | None = None

    def state(self, camera: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "camera": camera,
            "label": "person",
            "start_time": round(self.start_time, 3),
            "end_time": None if self.end_time is None else round(self.end_time, 3),
            "score": round(self.score, 4),
            "top_score": round(self.top_score, 4),
            "box": self.box,
            "frames": self.frames,
            "active": self.end_time is None,
        }


class PersonTracker:
    def __init__(self, camera: str, config: PersonEventsConfig) -> None:
        self.camera = camera
        self.config = config
        self._track: _Track | None = None
        self._hits = 0
        self._misses = 0
        self._last_update = 0.0

    @property
    def present(self) -> bool:
        return self._track is not None

    def update(
        self, present: bool, score: float, box: list[float] | None, wall: float
    ) -> PersonEvent | None:
        """One analysed frame (`wall`: time.time() of the frame)."""
        cfg = self.config
        track = self._track
        if track is None:
            self._hits = self._hits + 1 if present else 0
            if self._hits < cfg.min_frames:
                return None
            self._hits = 0
            self._misses = 0
            track = self._track = _Track(
                id=f"{wall:.6f}-{uuid.uuid4().hex[:6]}",
                start_time=wall,
                score=score,
                top_score=score,
                box=box,
                frames=cfg.min_frames,
            )
            self._last_update = wall
            state = track.state(self.camera)
            return PersonEvent("start", state, state, snapshot=True)
        before = track.state(self.camera)
        if present:
            self._misses = 0
            track.frames += 1
            track.score = score
            track.box = box
            better = score > track.top_score
            track.top_score = max(track.top_score, score)
            if wall - self._last_update >= cfg.update_interval_s:
                self._last_update = wall
                return PersonEvent("update", before, track.state(self.camera), snapshot=better)
            return None
        self._misses += 1
        if self._misses < cfg.end_frames:
            return None
        track.end_time = wall
        self._track = None
        self._misses = 0
        return PersonEvent("end", before, track.state(self.camera))

    def close(self, wall: float) -> PersonEvent | None:
        """End an open event (the camera stops)."""
        track = self._track
        if track is None:
            return None
        before = track.state(self.camera)
        track.end_time = wall
        self._track = None
        return PersonEvent("end", before, track.state(self.camera))


def _angle(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any], c: np.ndarray[Any, Any]) -> float:
    """Angle ABC in degrees (points as x, y)."""
    v1, v2 = a - b, c - b
    n1, n2 = float(np.hypot(*v1)), float(np.hypot(*v2))
    if n1 < 1e-6 or n2 < 1e-6:
        return float("nan")
    cos = float(np.dot(v1, v2)) / (n1 * n2)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def _xy(kp: Keypoints, index: int, aspect: float) -> np.ndarray[Any, Any]:
    """A keypoint in units of the image height (x scaled by width / height)."""
    return np.array([kp[index, 0] * aspect, kp[index, 1]])


def knee_angle(kp: Keypoints, min_score: float, aspect: float = 1.0) -> float | None:
    """Mean hip-knee-ankle angle over the legs whose three joints are seen, or None.
    `aspect` (width / height of the image) undoes the normalisation of x and y."""
    angles = []
    for hip, knee, ankle in ((L_HIP, L_KNEE, L_ANKLE), (R_HIP, R_KNEE, R_ANKLE)):
        if min(kp[hip, 2], kp[knee, 2], kp[ankle, 2]) >= min_score:
            value = _angle(_xy(kp, hip, aspect), _xy(kp, knee, aspect), _xy(kp, ankle, aspect))
            if not math.isnan(value):
                angles.append(value)
    return sum(angles) / len(angles) if angles else None


class RepCounter:
    def __init__(self, config: RepsConfig) -> None:
        self.config = config
        self.count = 0
        self.down = False
        self.last_angle: float | None = None

    def update(self, kp: Keypoints | None, aspect: float = 1.0) -> bool:
        """One analysed frame's pose (None: no person). True when a rep was completed."""
        if kp is None:
            return False
        angle = knee_angle(kp, self.config.min_score, aspect)
        self.last_angle = angle
        if angle is None:
            return False
        if not self.down and angle <= self.config.down_angle:
            self.down = True
        elif self.down and angle >= self.config.up_angle:
            self.down = False
            self.count += 1
            return True
        return False

    def reset(self) -> None:
        self.count = 0
        self.down = False


def torso(kp: Keypoints, min_score: float, aspect: float = 1.0) -> tuple[float, float, bool] | None:
    """(centre x, centre y, horizontal) of the torso from shoulders and hips, or None.
    Horizontal: the shoulder-to-hip axis is closer to horizontal than to vertical."""
    shoulders = [i for i in (L_SHOULDER, R_SHOULDER) if kp[i, 2] >= min_score]
    hips = [i for i in (L_HIP, R_HIP) if kp[i, 2] >= min_score]
    if not shoulders or not hips:
        return None
    top = kp[shoulders, :2].mean(axis=0)
    bottom = kp[hips, :2].mean(axis=0)
    centre = (top + bottom) / 2
    dx, dy = abs(float(bottom[0] - top[0])) * aspect, abs(float(bottom[1] - top[1]))
    return float(centre[0]), float(centre[1]), dx > dy


@dataclass
class FallDetector:
    config: FallConfig
    _history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=256))
    _fell_at: float | None = None  # when the drop ended in a horizontal pose
    fallen: bool = False

    def update(self, kp: Keypoints | None, now: float, aspect: float = 1.0) -> str | None:
        """One analysed frame (`now`: monotonic seconds). Returns `fall` when a fall is
        confirmed, `recovered` when the person is upright again after one, else None."""
        cfg = self.config
        seen = torso(kp, cfg.min_score, aspect) if kp is not None else None
        if seen is None:
            return None
        _, cy, horizontal = seen
        history = self._history
        while history and now - history[0][0] > cfg.window_s + cfg.horizontal_s:
            history.popleft()
        history.append((now, cy))
        if self.fallen:
            if not horizontal:
                self.fallen = False
                self._fell_at = None
                return "recovered"
            return None
        if not horizontal:
            self._fell_at = None
            return None
        if self._fell_at is None:
            recent = [y for t, y in history if now - t <= cfg.window_s]
            if recent and cy - min(recent) >= cfg.drop:
                self._fell_at = now
            else:
                return None
        if now - self._fell_at >= cfg.horizontal_s:
            self.fallen = True
            return "fall"
        return None
