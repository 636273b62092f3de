"""`person`: is someone in the picture? Derived from MoveNet's keypoint scores.

A person is present when the mean of the 5 best keypoint scores reaches
`vision.person_threshold` (default 0.4; the evidence is in agent/vision/pose.py and
docs/cameras.md). `result`: `person` (bool), `label` (`person` / `no_person`), `score` (the
presence score), `keypoints_visible` (keypoints scoring >= 0.3). The routing confidence is
the distance from the threshold (0 on it, 1 at either extreme).

Cloud: under `derived` or `frames` the cloud `person` model gets the keypoints (FP32
[N, 17, 3], MoveNet's y, x, score) and answers [N, 2] (person, no_person); under `never`
nothing is sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from agent.config import Config
from agent.errors import CloudError
from agent.privacy import Privacy, allows
from agent.tasks.base import CloudInput, FloatArray, Task
from agent.tasks.images import ImageTask
from agent.vision import pose

if TYPE_CHECKING:
    from agent.registry import TaskModels


class PersonTask(ImageTask):
    name = "person"
    description = "is a person in view (from the MoveNet pose)"
    canonical_shape: ClassVar[tuple[int, ...]] = (192, 192, 3)

    def __init__(
        self,
        width: int = 192,
        height: int = 192,
        resize: str = "stretch",
        threshold: float = pose.DEFAULT_PERSON_THRESHOLD,
    ) -> None:
        super().__init__(width, height, resize)
        self.threshold = threshold

    def resize_mode(self, config: Config) -> str:
        return config.vision.pose_resize

    def bind(self, models: TaskModels, config: Config) -> Task:
        bound = super().bind(models, config)
        assert isinstance(bound, PersonTask)
        bound.threshold = config.vision.person_threshold
        return bound

    def _score(self, output: FloatArray) -> tuple[float, int | None]:
        if output.size == 2:  # the cloud's (person, no_person)
            return float(np.asarray(output).reshape(-1)[0]), None
        kp = pose.keypoints(output)
        return pose.presence_score(kp), pose.visible_count(kp)

    def confidence(self, output: FloatArray) -> float:
        score, _ = self._score(output)
        return pose.decision_confidence(score, self.threshold)

    def result(
        self, output: FloatArray, labels: tuple[str, ...], top_k: int, meta: Any
    ) -> dict[str, Any]:
        score, visible = self._score(output)
        return pose.person_result(score, self.threshold, visible)

    def cloud_input(
        self, canonical: Any, output: FloatArray | None, privacy: Privacy | None
    ) -> CloudInput | None:
        if output is not None and allows(privacy, "derived"):
            batch = np.asarray(output, dtype=np.float32).reshape(1, 17, 3)
            return CloudInput("keypoints", batch, "derived")
        return None

    def cloud_output(self, outputs: FloatArray, labels: tuple[str, ...]) -> FloatArray:
        flat = np.asarray(outputs, dtype=np.float32).reshape(-1)
        if flat.size != 2 or not np.isfinite(flat).all() or not 0 <= flat[0] <= 1:
            raise CloudError("cloud_error", "cloud person answer is not [person, no_person]")
        return flat
