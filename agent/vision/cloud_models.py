"""The vision models of the reference cloud service (`edge-agent cloud --vision-dir DIR`).

- `classify`: MobileNet v2 on pixels (UINT8 or FP32 [N, H, W, 3], any size: resized to the
  model's input); an edge running the small MobileNet v1 0.25 gets a better second opinion.
- `pose`: MoveNet on pixels, same input; output [N, 17, 3] (y, x, score).
- `person`: derived data only: MoveNet keypoints FP32 [N, 17, 3] (y, x, score) -> [N, 2]
  (presence score, 1 - score), the same rule as the edge. It stands in for a cloud model
  that sees keypoints, never pixels (privacy `derived`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from agent import imaging
from agent.cloud.server import ServedModel
from agent.errors import ModelLoadError
from agent.registry import ModelSpec
from agent.vision import pose
from agent.vision.catalog import task_models

log = logging.getLogger(__name__)


class PixelModel(ServedModel):
    """A pretrained vision model on a batch of RGB images of any size."""

    def __init__(self, task: str, spec: ModelSpec, instances: int, num_threads: int) -> None:
        super().__init__(task, spec, instances, num_threads)
        height, width = spec.entry.input.shape[:2]
        self.canonical_shape = (height, width, 3)
        self._width, self._height = width, height

    def accepts(self, shape: list[int]) -> bool:
        return (
            len(shape) == 4 and shape[3] == 3 and min(shape[1:3]) >= 16 and max(shape[1:3]) <= 4096
        )

    def infer(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        pixels = np.clip(np.rint(batch), 0, 255).astype(np.uint8)
        if pixels.shape[1:3] != (self._height, self._width):
            target = imaging.ModelInput(self._width, self._height)
            resized = []
            for image in pixels:
                target.fill(imaging.rgb_to_bgr(image))
                resized.append(target.rgb.copy())
            pixels = np.stack(resized)
        out = super().infer(pixels)
        return out.reshape(out.shape[0], -1) if self.task == "classify" else out.reshape(-1, 17, 3)


class KeypointPersonModel(ServedModel):
    """`person` from keypoints: no interpreter, no pixels."""

    def __init__(self, spec: ModelSpec, threshold: float = pose.DEFAULT_PERSON_THRESHOLD) -> None:
        self.task = "person"
        self.spec = spec
        self.canonical_shape = (17, 3)
        self.threshold = threshold

    def infer(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        scores = [pose.presence_score(pose.keypoints(sample)) for sample in batch]
        values = np.asarray(scores, dtype=np.float32)
        return np.stack([values, 1.0 - values], axis=1)


def load_vision_models(
    dirs: list[Path], instances: int = 2, num_threads: int = 1
) -> dict[str, ServedModel]:
    """The vision models whose files are found in `dirs` (the others are skipped, logged)."""
    served: dict[str, ServedModel] = {}
    for task in ("classify", "pose", "person"):
        try:
            models = task_models(task, None, dirs)
        except ModelLoadError as exc:
            log.warning("cloud: no %s model: %s", task, exc)
            continue
        spec = models.edge
        assert spec is not None
        spec.verify()
        if task == "person":
            served[task] = KeypointPersonModel(spec)
        else:
            served[task] = PixelModel(task, spec, instances, num_threads)
    return served
