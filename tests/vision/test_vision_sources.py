"""Frame sources: an HTTP stream that drops and comes back, a device that is not there,
the latest-frame slot, and the MQTT source's rate and size limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from agent import imaging
from agent.devtools.broker import free_port
from agent.vision.config import SourceConfig
from agent.vision.sources import Frame, FrameSlot, MqttSource, OpenCvSource


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory, self.port = directory, port
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        handler = partial(_Quiet, directory=str(self.directory))
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def video_server(tmp_path: Path) -> Iterator[_Server]:
    frames = [np.full((120, 160, 3), 20 * i, dtype=np.uint8) for i in range(10)]
    imaging.write_video(str(tmp_path / "clip.avi"), frames, fps=10)
    server = _Server(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


def _wait(predicate: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_dropped_stream_is_reopened(video_server: _Server) -> None:
    slot = FrameSlot()
    config = SourceConfig.model_validate(
        {
            "type": "opencv",
            "url": f"http://127.0.0.1:{video_server.port}/clip.avi",
            "fps": 50,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.4,
        }
    )
    source = OpenCvSource("cam", config, slot)
    source.start()
    try:
        # the clip ends (the stream drops) and is opened again, and again
        assert _wait(lambda: source.counts["reconnects"] >= 2, 20)
        assert source.counts["frames"] >= 2
        video_server.stop()  # the camera goes away: open failures, with backoff
        assert _wait(lambda: source.counts["open_failures"] >= 2, 20)
        assert not source.finished.is_set()
        frames = source.counts["frames"]
        video_server.start()  # and comes back
        assert _wait(lambda: source.counts["frames"] > frames, 20)
        assert slot.get(1.0) is not None
    finally:
        source.stop()


def test_a_file_ends_and_a_missing_device_retries(tmp_path: Path) -> None:
    frames = [np.full((60, 80, 3), 10 * i, dtype=np.uint8) for i in range(6)]
    imaging.write_video(str(tmp_path / "c.avi"), frames, fps=10)
    slot = FrameSlot()
    cfg = SourceConfig.model_validate({"type": "opencv", "url": str(tmp_path / "c.avi"), "fps": 60})
    source = OpenCvSource("f", cfg, slot)
    source.start()
    assert _wait(source.finished.is_set, 10)
    source.stop()
    assert source.counts["frames"] == 6 and source.counts["reconnects"] == 0

    missing = SourceConfig.model_validate(
        {"type": "opencv", "url": "/dev/video99", "reconnect_min_s": 0.05, "reconnect_max_s": 0.1}
    )
    gone = OpenCvSource("g", missing, FrameSlot())
    gone.start()
    assert _wait(lambda: gone.counts["open_failures"] >= 3, 10)
    gone.stop()
    assert not gone.connected


def test_the_slot_keeps_only_the_newest_frame() -> None:
    slot = FrameSlot()
    for i in range(5):
        slot.put(Frame(received=float(i), wall=0.0, data=bytes([i])))
    frame = slot.get(0.1)
    assert frame is not None and frame.data == bytes([4])
    assert slot.counts["replaced"] == 4 and slot.get(0.01) is None


def test_mqtt_source_limits_rate_and_size() -> None:
    slot = FrameSlot()
    cfg = SourceConfig.model_validate({"type": "mqtt", "topic": "cams/x", "fps": 5})
    source = MqttSource(cfg, slot, max_bytes=100)
    source.offer(b"x" * 101)
    assert source.counts["too_large"] == 1
    for _ in range(10):
        source.offer(b"jpeg")
    assert source.counts["rate_skipped"] == 9 and slot.counts["received"] == 1
    time.sleep(0.2)
    source.offer(b"jpeg")
    assert slot.counts["received"] == 2
