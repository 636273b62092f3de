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


# ----------------------------------------------------------------------------- camera frames


def reduce_factor(width: int, height: int, min_width: int, min_height: int) -> int:
    """The largest reduced-decode factor (1, 2, 4, 8) that keeps the image at least
    `min_width` x `min_height`, so the model input is never upscaled from a reduced decode."""
    for factor in (8, 4, 2):
        if -(-width // factor) >= min_width and -(-height // factor) >= min_height:
            return factor
    return 1


def decode_bgr(
    data: bytes, max_pixels: int, *, reduce: int = 1, field: str = "image"
) -> npt.NDArray[np.uint8]:
    """Decode PNG/JPEG/BMP bytes to HxWx3 BGR (OpenCV's order: convert after resizing,
    where it is cheap). `reduce` as in `decode_image`; the size check happens first."""
    size = image_size(data)
    if size is None:
        raise InputError("invalid_image", f"{field}: not a PNG, JPEG or BMP image")
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError("invalid_image", f"{field}: image has no pixels")
    if width * height > max_pixels:
        raise InputError(
            "image_too_large", f"{field}: {width}x{height} is over the limit of {max_pixels} pixels"
        )
    flags = {
        1: cv2.IMREAD_COLOR,
        2: cv2.IMREAD_REDUCED_COLOR_2,
        4: cv2.IMREAD_REDUCED_COLOR_4,
        8: cv2.IMREAD_REDUCED_COLOR_8,
    }[reduce]
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None:
        raise InputError("invalid_image", f"{field}: the image does not decode")
    return np.asarray(image, dtype=np.uint8)


class Placement:
    """Where the source image sits in a model input (normalised 0..1 model coordinates):
    maps model-normalised points back to source-normalised ones."""

    __slots__ = ("height", "left", "top", "width")

    def __init__(
        self, left: float = 0.0, top: float = 0.0, width: float = 1.0, height: float = 1.0
    ) -> None:
        self.left, self.top, self.width, self.height = left, top, width, height

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.left) / self.width, (y - self.top) / self.height


STRETCH = Placement()


class ModelInput:
    """Turns BGR frames into one model's uint8 RGB input, into buffers allocated once
    (the camera hot path makes no per-frame allocations here)."""

    def __init__(self, width: int, height: int, mode: str = "stretch") -> None:
        if mode not in ("stretch", "letterbox"):
            raise ValueError(f"unknown resize mode {mode!r}")
        self.width, self.height, self.mode = width, height, mode
        self.rgb = np.zeros((height, width, 3), dtype=np.uint8)
        self._scratch: dict[tuple[int, int], npt.NDArray[np.uint8]] = {}

    def _buffer(self, width: int, height: int) -> npt.NDArray[np.uint8]:
        buf = self._scratch.get((width, height))
        if buf is None:
            if len(self._scratch) > 8:  # a source changing size: forget old sizes
                self._scratch.clear()
            buf = self._scratch[(width, height)] = np.empty((height, width, 3), dtype=np.uint8)
        return buf

    def fill(self, bgr: npt.NDArray[np.uint8]) -> Placement:
        """Resize `bgr` into `self.rgb` (area when shrinking, linear when growing)."""
        src_h, src_w = bgr.shape[:2]
        if self.mode == "stretch":
            new_w, new_h, left, top = self.width, self.height, 0, 0
        else:
            scale = min(self.width / src_w, self.height / src_h)
            new_w = max(1, round(src_w * scale))
            new_h = max(1, round(src_h * scale))
            left, top = (self.width - new_w) // 2, (self.height - new_h) // 2
        shrinking = src_w >= new_w and src_h >= new_h
        method = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        scratch = self._buffer(new_w, new_h)
        cv2.resize(bgr, (new_w, new_h), dst=scratch, interpolation=method)
        if self.mode == "stretch":
            cv2.cvtColor(scratch, cv2.COLOR_BGR2RGB, dst=self.rgb)
            return STRETCH
        self.rgb.fill(0)
        cv2.cvtColor(scratch, cv2.COLOR_BGR2RGB, dst=scratch)
        self.rgb[top : top + new_h, left : left + new_w] = scratch
        return Placement(
            left / self.width, top / self.height, new_w / self.width, new_h / self.height
        )


class FrameDiff:
    """Frame differencing against a slowly adapting background, on a small gray copy.
    `update()` returns the share of unmasked pixels that changed by `threshold` or more."""

    def __init__(
        self,
        width: int,
        threshold: int,
        alpha: float,
        masks: list[tuple[float, float, float, float]] | None = None,
    ) -> None:
        self.width, self.threshold, self.alpha = width, threshold, alpha
        self.masks = list(masks or [])
        self._shape: tuple[int, int] | None = None

    def _allocate(self, src_w: int, src_h: int) -> None:
        height = max(8, round(self.width * src_h / src_w))
        self._shape = (src_w, src_h)
        self._color = np.empty((height, self.width, 3), dtype=np.uint8)
        self._gray = np.empty((height, self.width), dtype=np.uint8)
        self._diff = np.empty((height, self.width), dtype=np.uint8)
        self._background = np.zeros((height, self.width), dtype=np.float32)
        self._background_u8 = np.empty((height, self.width), dtype=np.uint8)
        self._keep = np.full((height, self.width), 255, dtype=np.uint8)
        for x1, y1, x2, y2 in self.masks:
            self._keep[
                int(y1 * height) : int(np.ceil(y2 * height)),
                int(x1 * self.width) : int(np.ceil(x2 * self.width)),
            ] = 0
        self._area = max(1, int(np.count_nonzero(self._keep)))
        self._primed = False

    def update(self, bgr: npt.NDArray[np.uint8]) -> float:
        src_h, src_w = bgr.shape[:2]
        if self._shape != (src_w, src_h):
            self._allocate(src_w, src_h)
        size = (self._gray.shape[1], self._gray.shape[0])
        cv2.resize(bgr, size, dst=self._color, interpolation=cv2.INTER_AREA)
        cv2.cvtColor(self._color, cv2.COLOR_BGR2GRAY, dst=self._gray)
        cv2.GaussianBlur(self._gray, (5, 5), 0, dst=self._gray)
        if not self._primed:
            self._background[...] = self._gray
            self._primed = True
            return 1.0  # the first frame is news
        cv2.convertScaleAbs(self._background, dst=self._background_u8)
        cv2.absdiff(self._gray, self._background_u8, dst=self._diff)
        cv2.threshold(self._diff, self.threshold - 1, 255, cv2.THRESH_BINARY, dst=self._diff)
        cv2.bitwise_and(self._diff, self._keep, dst=self._diff)
        changed = cv2.countNonZero(self._diff)
        cv2.accumulateWeighted(self._gray, self._background, self.alpha)
        return float(changed) / self._area


def encode_jpeg_limited(rgb: npt.NDArray[np.uint8], max_bytes: int, max_side: int) -> bytes | None:
    """A JPEG of at most `max_bytes`: shrink to `max_side`, then lower the quality, then the
    size. None when even a tiny version does not fit."""
    image = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), dtype=np.uint8)
    for _ in range(6):
        h, w = image.shape[:2]
        if max(h, w) > max_side:
            scale = max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        for quality in (85, 70, 55, 40):
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and len(buf) <= max_bytes:
                return bytes(buf)
        max_side = int(max(h, w) * 0.7)
        if max_side < 32:
            break
    return None


class VideoSource:
    """A cv2.VideoCapture: a V4L2 device (`0`, `/dev/video0`), an RTSP/HTTP stream or a
    video file. Frames are BGR. Opening and reading network streams time out."""

    def __init__(
        self,
        url: str,
        *,
        width: int | None = None,
        height: int | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        target: int | str = int(url) if url.isdigit() else url
        self.is_stream = url.startswith(("rtsp://", "rtsps://", "http://", "https://"))
        self.is_file = not self.is_stream and not url.isdigit() and not url.startswith("/dev/")
        if self.is_stream:
            ms = int(timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            self._cap = cv2.VideoCapture(target, cv2.CAP_ANY, params)
        else:
            self._cap = cv2.VideoCapture(target)
        if not self.is_file:
            self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
        if width:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    @property
    def opened(self) -> bool:
        return bool(self._cap.isOpened())

    @property
    def fps(self) -> float:
        value = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return value if 0 < value < 1000 else 0.0

    def grab(self) -> bool:
        """Take the next frame from the stream without decoding it."""
        return bool(self._cap.grab())

    def retrieve(self) -> npt.NDArray[np.uint8] | None:
        ok, frame = self._cap.retrieve()
        return np.asarray(frame, dtype=np.uint8) if ok and frame is not None else None

    def release(self) -> None:
        self._cap.release()


def write_video(path: str, frames_rgb: list[npt.NDArray[np.uint8]], fps: float) -> None:
    """Write RGB frames (all the same size) as a Motion-JPEG AVI: tests and demos."""
    height, width = frames_rgb[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise ValueError(f"cannot write video {path}")
    try:
        for frame in frames_rgb:
            writer.write(np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)))
    finally:
        writer.release()


def rgb_to_bgr(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), dtype=np.uint8)


def bgr_to_rgb(bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


# ----------------------------------------------------------------------------- charts


def line_chart(
    xs: npt.NDArray[np.float64],
    ys: npt.NDArray[np.float64],
    *,
    marker: tuple[float, float] | None,
    title: str,
    xlabel: str,
    ylabel: str,
    y_range: tuple[float, float],
    size: tuple[int, int] = (800, 520),
) -> bytes:
    """A small PNG line chart (x in 0..1), drawn with OpenCV so that the runtime needs no
    plotting library. `marker` is highlighted with a circle and its coordinates."""
    width, height = size
    left, right, top, bottom = 110, 30, 50, 60
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    y0, y1 = y_range
    span = max(y1 - y0, 1e-9)

    def px(x: float, y: float) -> tuple[int, int]:
        return (
            int(left + x * (width - left - right)),
            int(height - bottom - (y - y0) / span * (height - top - bottom)),
        )

    grey, black, blue, red = (220, 220, 220), (0, 0, 0), (180, 90, 20), (30, 30, 220)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(11):
        gx = i / 10
        cv2.line(img, px(gx, y0), px(gx, y1), grey, 1)
        cv2.putText(img, f"{gx:.1f}", (px(gx, y0)[0] - 12, height - bottom + 20), font, 0.4, black)
        gy = y0 + span * i / 10
        cv2.line(img, px(0, gy), px(1, gy), grey, 1)
        cv2.putText(img, f"{gy:.3f}", (left - 62, px(0, gy)[1] + 4), font, 0.4, black)
    cv2.rectangle(img, px(0, y1), px(1, y0), black, 1)
    clipped = np.clip(ys, y0, y1)
    points = np.array([px(float(x), float(y)) for x, y in zip(xs, clipped, strict=True)])
    if len(points) > 1:
        cv2.polylines(img, [points.reshape(-1, 1, 2)], False, blue, 2, cv2.LINE_AA)
    if marker is not None:
        mx, my = px(marker[0], min(max(marker[1], y0), y1))
        cv2.circle(img, (mx, my), 7, red, 2, cv2.LINE_AA)
        cv2.putText(img, f"chosen ({marker[0]:.3f}, {marker[1]:.4f})", (mx + 10, my - 10),
                    font, 0.45, red, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 30), font, 0.6, black, 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, (width // 2 - 80, height - 15), font, 0.5, black, 1, cv2.LINE_AA)
    label = np.full((24, 300, 3), 255, dtype=np.uint8)
    cv2.putText(label, ylabel, (5, 17), font, 0.5, black, 1, cv2.LINE_AA)
    rotated = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
    top_y = max(0, height // 2 - 150)
    img[top_y : top_y + 300, 0:24] = rotated[: min(300, height - top_y)]
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(buf)
