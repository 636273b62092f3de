"""Image decoding: the only module that imports OpenCV.

Every image comes from the network, so the header is read first and an image that would
decode to more than the configured number of pixels is refused before any decoding.
"""

from __future__ import annotations

import base64
import binascii
import struct

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import InputError

_PNG = b"\x89PNG\r\n\x1a\n"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG or BMP header, or None when not recognised."""
    if data.startswith(_PNG) and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(int(width)), abs(int(height))
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if marker in _SOF:
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(width), int(height)
            i += 2 + length
    return None


def b64decode(text: str, field: str) -> bytes:
    """Strict base64 (a `data:` URL prefix is allowed)."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("invalid_input", f"{field}: not valid base64") from None


def decode_image(
    data: bytes, max_pixels: int, *, gray: bool, reduce: int = 1, field: str = "image"
) -> npt.NDArray[np.uint8]:
    """Decode PNG/JPEG/BMP bytes to a uint8 array (HxW gray, or HxWx3 RGB).

    `reduce` (1, 2, 4 or 8) asks the decoder for a reduced-size image, which for JPEG is far
    cheaper than a full decode followed by a resize.
    """
    size = image_size(data)
    if size is None:
        raise InputError("invalid_image", f"{field}: not a PNG, JPEG or BMP image")
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError("invalid_image", f"{field}: image has no pixels")
    if width * height > max_pixels:
        raise InputError(
            "image_too_large",
            f"{field}: {width}x{height} is over the limit of {max_pixels} pixels",
        )
    flags = {
        (True, 1): cv2.IMREAD_GRAYSCALE,
        (True, 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
        (True, 4): cv2.IMREAD_REDUCED_GRAYSCALE_4,
        (True, 8): cv2.IMREAD_REDUCED_GRAYSCALE_8,
        (False, 1): cv2.IMREAD_COLOR,
        (False, 2): cv2.IMREAD_REDUCED_COLOR_2,
        (False, 4): cv2.IMREAD_REDUCED_COLOR_4,
        (False, 8): cv2.IMREAD_REDUCED_COLOR_8,
    }[(gray, reduce)]
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None:
        raise InputError("invalid_image", f"{field}: the image does not decode")
    if not gray:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.asarray(image, dtype=np.uint8)


def resize(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """Resize with area interpolation when shrinking, linear when growing."""
    shrinking = image.shape[1] >= width and image.shape[0] >= height
    method = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (width, height), interpolation=method), dtype=np.uint8)


def encode_png(image: npt.NDArray[np.uint8]) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(buf)


def encode_jpeg(image: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    """Encode an RGB (or gray) image as JPEG."""
    if image.ndim == 3:
        image = np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf)
