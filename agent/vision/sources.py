"""Frame sources: frames published on MQTT, and OpenCV captures (V4L2, RTSP/HTTP, files).

A source never runs a model. It hands each frame to its camera's `FrameSlot`, which keeps
only the newest frame: when analysis is slower than the camera, older frames are replaced
(and counted), never queued, so latency stays bounded by one frame.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent import imaging
from agent.vision.config import SourceConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One frame: encoded bytes (MQTT) or an already decoded BGR image (OpenCV)."""

    received: float  # time.monotonic()
    wall: float  # time.time()
    data: bytes | None = None
    image: npt.NDArray[np.uint8] | None = None


class FrameSlot:
    """A one-frame mailbox between a source and its camera's analysis thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.counts: Counter[str] = Counter()

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.counts["replaced"] += 1  # analysis was busy: the older frame is dropped
            self._frame = frame
            self.counts["received"] += 1
            self._cond.notify()

    def get(self, timeout: float) -> Frame | None:
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class MqttSource:
    """Frames (JPEG/PNG/BMP payloads) arriving on a topic. `offer` runs on the MQTT network
    thread: it only checks the rate and the size, and hands off."""

    def __init__(self, config: SourceConfig, slot: FrameSlot, max_bytes: int) -> None:
        assert config.topic is not None
        self.topic = config.topic
        self._slot = slot
        self._interval = 1.0 / config.fps
        self._max_bytes = max_bytes
        self._next = 0.0
        self.counts: Counter[str] = Counter()

    def offer(self, payload: bytes) -> None:
        now = time.monotonic()
        self.counts["messages"] += 1
        if len(payload) > self._max_bytes:
            self.counts["too_large"] += 1
            return
        if now < self._next:
            self.counts["rate_skipped"] += 1
            return
        # 10% early is on time: a camera publishing at exactly `fps` must not lose every
        # other frame to jitter.
        self._next = now + 0.9 * self._interval
        self._slot.put(Frame(received=now, wall=time.time(), data=payload))

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    @property
    def connected(self) -> bool:
        return True


class OpenCvSource:
    """A capture read on its own thread at `fps`, reopened with backoff when it drops.

    Live sources (devices, streams) are drained continuously with `grab()` (cheap: no
    decode) so the frame analysed is the newest; only the frames due at `fps` are decoded.
    A file is played at `fps`, one frame per period; at its end the source stops, or
    starts again with `loop: true`.
    """

    def __init__(self, name: str, config: SourceConfig, slot: FrameSlot) -> None:
        assert config.url is not None
        self.name = name
        self._config = config
        self._slot = slot
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self.finished = threading.Event()  # a file reached its end (no loop)
        self.counts: Counter[str] = Counter()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        cfg = self._config
        assert cfg.url is not None
        delay = cfg.reconnect_min_s
        while not self._stop.is_set():
            capture = imaging.VideoSource(cfg.url, width=cfg.width, height=cfg.height)
            if not capture.opened:
                capture.release()
                self.counts["open_failures"] += 1
                wait = random.uniform(delay / 2, delay)
                log.warning(
                    "camera %s: cannot open %s; retrying in %.1fs", self.name, cfg.url, wait
                )
                self._stop.wait(wait)
                delay = min(cfg.reconnect_max_s, delay * 2)
                continue
            log.info("camera %s: opened %s", self.name, cfg.url)
            self._connected.set()
            delay = cfg.reconnect_min_s
            try:
                ended = self._read(capture)
            finally:
                capture.release()
                self._connected.clear()
            if ended and capture.is_file and not cfg.loop:
                log.info("camera %s: end of %s", self.name, cfg.url)
                self.finished.set()
                return
            if not self._stop.is_set() and not capture.is_file:
                self.counts["reconnects"] += 1
                log.warning("camera %s: stream dropped; reopening", self.name)
                self._stop.wait(random.uniform(0, cfg.reconnect_min_s))

    def _read(self, capture: imaging.VideoSource) -> bool:
        """Read until the stream fails or stop is asked. True when the stream ended."""
        interval = 1.0 / self._config.fps
        due = time.monotonic()
        while not self._stop.is_set():
            if capture.is_file:
                self._stop.wait(max(0.0, due - time.monotonic()))
            if not capture.grab():
                return True
            now = time.monotonic()
            if now + 0.001 < due:
                self.counts["rate_skipped"] += 1
                continue  # live source: drained, not decoded
            image = capture.retrieve()
            if image is None:
                return True
            self.counts["frames"] += 1
            due = max(due + interval, now) if capture.is_file else now + interval
            self._slot.put(Frame(received=now, wall=time.time(), image=image))
        return False
