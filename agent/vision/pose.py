"""MoveNet post-processing: keypoints normalised to the source image, and person presence.

MoveNet single-pose returns float32 [1, 1, 17, 3]: (y, x, score) per keypoint, normalised
to the model input. `keypoints()` maps them back to the source image (undoing a letterbox)
and returns an array [17, 3] of (x, y, score).

Person presence: MoveNet always returns 17 keypoints, person or not; their scores say how
sure it is. The presence score is the mean of the 5 best keypoint scores, and a person is
present when it reaches `threshold` (default 0.4). Measured on the shared images (stretch
resize): grace_hopper 0.63, squat 0.75, face 0.54 (people); cat_720p 0.18, hot_dog 0.25,
blank/gray/noise frames <= 0.10 (no people): 0.4 leaves a margin of at least 0.14 each side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from agent.imaging import STRETCH, Placement

KEYPOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

Keypoints = npt.NDArray[np.float32]  # [17, 3]: x, y, score (source-normalised)

TOP_KEYPOINTS = 5
VISIBLE_SCORE = 0.3
DEFAULT_PERSON_THRESHOLD = 0.4


def keypoints(output: npt.NDArray[Any], placement: Placement | None = None) -> Keypoints:
    """MoveNet output (any shape holding 17 x (y, x, score)) -> [17, 3] (x, y, score) in
    the source image's normalised coordinates, clipped to 0..1."""
    raw = np.asarray(output, dtype=np.float32).reshape(len(KEYPOINT_NAMES), 3)
    place = placement or STRETCH
    out = np.empty_like(raw)
    out[:, 0] = (raw[:, 1] - place.left) / place.width
    out[:, 1] = (raw[:, 0] - place.top) / place.height
    out[:, 2] = raw[:, 2]
    np.clip(out[:, :2], 0.0, 1.0, out=out[:, :2])
    return out


def keypoints_json(kp: Keypoints) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "x": round(float(x), 4),
            "y": round(float(y), 4),
            "score": round(float(s), 4),
        }
        for name, (x, y, s) in zip(KEYPOINT_NAMES, kp, strict=True)
    ]


def presence_score(kp: Keypoints) -> float:
    """Mean of the TOP_KEYPOINTS best keypoint scores (0..1)."""
    scores = np.sort(kp[:, 2])[::-1][:TOP_KEYPOINTS]
    return float(scores.mean())


def visible_count(kp: Keypoints, min_score: float = VISIBLE_SCORE) -> int:
    return int(np.count_nonzero(kp[:, 2] >= min_score))


def box(kp: Keypoints, min_score: float = VISIBLE_SCORE) -> list[float] | None:
    """[x1, y1, x2, y2] around the visible keypoints (normalised), or None."""
    seen = kp[kp[:, 2] >= min_score]
    if seen.shape[0] == 0:
        return None
    return [
        round(float(seen[:, 0].min()), 4),
        round(float(seen[:, 1].min()), 4),
        round(float(seen[:, 0].max()), 4),
        round(float(seen[:, 1].max()), 4),
    ]


def person_result(score: float, threshold: float, visible: int | None = None) -> dict[str, Any]:
    present = score >= threshold
    result: dict[str, Any] = {
        "person": present,
        "label": "person" if present else "no_person",
        "score": round(score, 4),
        "threshold": threshold,
    }
    if visible is not None:
        result["keypoints_visible"] = visible
    return result


def decision_confidence(score: float, threshold: float) -> float:
    """How far `score` is from the decision boundary: 0 on it, 1 at either extreme."""
    span = max(threshold, 1.0 - threshold)
    return min(1.0, abs(score - threshold) / span)
