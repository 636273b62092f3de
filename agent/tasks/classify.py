"""`classify`: ImageNet classification with a pretrained int8 MobileNet (1001 classes; label
0 is `background`). `result` is the usual `label`, `score`, `top`. Under privacy `frames` the
cloud `classify` model gets the pixels (UINT8 [1, H, W, 3]); the labels are the answer
itself, so under `derived` or `never` nothing is sent."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from agent.privacy import Privacy, allows
from agent.tasks.base import CloudInput, FloatArray
from agent.tasks.images import ImageTask


class ClassifyTask(ImageTask):
    name = "classify"
    description = "what is in the picture (ImageNet, MobileNet)"
    canonical_shape: ClassVar[tuple[int, ...]] = (224, 224, 3)

    def __init__(self, width: int = 224, height: int = 224, resize: str = "stretch") -> None:
        super().__init__(width, height, resize)

    def cloud_input(
        self, canonical: Any, output: FloatArray | None, privacy: Privacy | None
    ) -> CloudInput | None:
        if allows(privacy, "frames"):
            return CloudInput("input", np.asarray(canonical)[np.newaxis], "frames")
        return None
