"""`digits`: handwritten digit recognition for classroom tablets.

Canonical input: an 8x8 grid of 0..16 ink intensities, as scikit-learn's digits (each cell
counts the inked pixels of a 4x4 block of a 32x32 bitmap). Images are turned into that grid
the same way: binarised, cropped to the ink, scaled to fill 32 px, and block-counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt

from agent import imaging
from agent.config import LimitsConfig
from agent.errors import InputError
from agent.tasks.base import FloatArray, Task, number_array

_MAX_SIDE = 4096


def image_to_grid(gray: npt.NDArray[np.uint8]) -> FloatArray:
    """A grayscale image of one digit (any size, either polarity) -> 8x8 grid of 0..16."""
    if float(gray.mean()) > 127.0:  # dark ink on a light background: make ink bright
        gray = (255 - gray).astype(np.uint8)
    if int(gray.max()) == int(gray.min()):
        return np.zeros((8, 8), dtype=np.float32)
    _, ink = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32)
    h, w = crop.shape
    scale = 32.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    scaled = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((32, 32), dtype=np.float32)
    top, left = (32 - nh) // 2, (32 - nw) // 2
    canvas[top : top + nh, left : left + nw] = scaled
    on = (canvas >= 0.5).astype(np.float32)
    return np.asarray(on.reshape(8, 4, 8, 4).sum(axis=(1, 3)), dtype=np.float32)


class DigitsTask(Task):
    name = "digits"
    description = "handwritten digit 0-9 from a classroom tablet"
    canonical_shape = (8, 8)
    input_fields: ClassVar[Mapping[str, str]] = {
        "pixels": "8x8 grid of 0..16 ink intensities (scikit-learn digits)",
        "image": "grayscale image: HxW nested lists of 0..255, or a base64 PNG/JPEG/BMP",
    }

    def request_input(self, canonical: FloatArray) -> dict[str, Any]:
        return {"pixels": canonical.reshape(8, 8).tolist()}

    def parse_input(self, data: Mapping[str, Any], limits: LimitsConfig) -> FloatArray:
        field = self.check_fields(data, one_of=("pixels", "image"))
        if field == "pixels":
            return number_array(
                data["pixels"], "input.pixels", ndim=2, shape=(8, 8), low=0, high=16
            )
        image = data["image"]
        if isinstance(image, str):
            raw = imaging.b64decode(image, "input.image")
            gray = imaging.decode_image(
                raw, limits.max_image_pixels, gray=True, field="input.image"
            )
        elif isinstance(image, list):
            arr = number_array(
                image,
                "input.image",
                ndim=2,
                low=0,
                high=255,
                max_items=min(limits.max_image_pixels, _MAX_SIDE * _MAX_SIDE),
            )
            if min(arr.shape) < 2:
                raise InputError("invalid_input", "input.image: at least 2x2 pixels")
            gray = np.rint(arr).astype(np.uint8)
        else:
            raise InputError(
                "invalid_input", "input.image: expected nested lists or a base64 string"
            )
        return image_to_grid(gray)
