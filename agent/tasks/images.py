"""What the vision tasks (`pose`, `person`, `classify`) share: a base64 image in, decoded at
reduced size when the model input is small, resized as the model needs, as uint8 RGB (the
pretrained models take uint8 input, so no float conversion happens)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from agent import imaging
from agent.config import Config, LimitsConfig, TaskConfig
from agent.errors import InputError
from agent.tasks.base import FloatArray, Task

if TYPE_CHECKING:
    from agent.registry import Registry, TaskModels


def search_dirs(config: Config) -> list[Path]:
    return [config.models.dir, *config.models.extra_dirs]


class ImageTask(Task):
    image_input = True
    input_fields: ClassVar[Mapping[str, str]] = {
        "image": "base64 JPEG, PNG or BMP (a data: URL prefix is allowed)",
    }

    def __init__(self, width: int, height: int, resize: str = "stretch") -> None:
        self.width, self.height, self.resize = width, height, resize

    def resolve_models(self, registry: Registry, config: Config, task: TaskConfig) -> TaskModels:
        from agent.vision.catalog import task_models

        return task_models(
            self.name, task.model, search_dirs(config), verify=config.models.verify_hashes
        )

    def resize_mode(self, config: Config) -> str:
        return "stretch"

    def bind(self, models: TaskModels, config: Config) -> Task:
        spec = models.edge
        if spec is None:
            return self
        height, width = spec.entry.input.shape[:2]
        return type(self)(width, height, self.resize_mode(config))

    def decode(
        self, data: bytes, limits: LimitsConfig, field: str = "input.image"
    ) -> tuple[npt.NDArray[np.uint8], imaging.Placement]:
        """Image bytes -> (uint8 RGB model input, where the image sits in it)."""
        size = imaging.image_size(data)
        reduce = 1
        if size is not None and data.startswith(b"\xff\xd8"):  # reduced decode: JPEG only
            reduce = imaging.reduce_factor(size[0], size[1], self.width, self.height)
        bgr = imaging.decode_bgr(data, limits.max_image_pixels, reduce=reduce, field=field)
        target = imaging.ModelInput(self.width, self.height, self.resize)
        placement = target.fill(bgr)
        return target.rgb, placement

    def prepare(self, data: Mapping[str, Any], limits: LimitsConfig) -> tuple[Any, Any]:
        self.check_fields(data, one_of=("image",))
        image = data["image"]
        if not isinstance(image, str):
            raise InputError("invalid_input", "input.image: expected a base64 string")
        return self.decode(imaging.b64decode(image, "input.image"), limits)

    def parse_input(self, data: Mapping[str, Any], limits: LimitsConfig) -> FloatArray:
        canonical, _ = self.prepare(data, limits)
        return np.asarray(canonical)
