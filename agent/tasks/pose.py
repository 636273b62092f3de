"""`pose`: MoveNet single-pose lightning on an image.

`result.keypoints` holds 17 `{"name", "x", "y", "score"}`, x and y normalised to the
image (0..1, origin top-left); `result.score` is the mean keypoint score (the routing
confidence). Under privacy `frames` the cloud may get the model input; the pose is itself
the derived data, so under `derived` or `never` nothing is sent.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from agent.config import Config
from agent.errors import CloudError
from agent.privacy import Privacy, allows
from agent.tasks.base import CloudInput, FloatArray
from agent.tasks.images import ImageTask
from agent.vision import pose


class PoseTask(ImageTask):
    name = "pose"
    description = "17 body keypoints of one person (MoveNet lightning)"
    canonical_shape: ClassVar[tuple[int, ...]] = (192, 192, 3)

    def __init__(self, width: int = 192, height: int = 192, resize: str = "stretch") -> None:
        super().__init__(width, height, resize)

    def resize_mode(self, config: Config) -> str:
        return config.vision.pose_resize

    def confidence(self, output: FloatArray) -> float:
        return float(pose.keypoints(output)[:, 2].mean())

    def result(
        self, output: FloatArray, labels: tuple[str, ...], top_k: int, meta: Any
    ) -> dict[str, Any]:
        kp = pose.keypoints(output, meta)
        return {
            "keypoints": pose.keypoints_json(kp),
            "score": round(float(kp[:, 2].mean()), 4),
            "box": pose.box(kp),
        }

    def cloud_input(
        self, canonical: Any, output: FloatArray | None, privacy: Privacy | None
    ) -> CloudInput | None:
        if allows(privacy, "frames"):
            return CloudInput("input", np.asarray(canonical)[np.newaxis], "frames")
        return None

    def cloud_output(self, outputs: FloatArray, labels: tuple[str, ...]) -> FloatArray:
        if outputs.size != 51 or not np.isfinite(outputs).all():
            raise CloudError("cloud_error", f"cloud returned {outputs.size} values, not 17 x 3")
        return np.asarray(outputs, dtype=np.float32).reshape(17, 3)
