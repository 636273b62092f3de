"""One camera: frames in (a source and a one-frame slot), motion gate, models, results and
events out. The analysis runs on the camera's own thread with its own interpreters.

Per analysed frame, each distinct model runs once (`person` and `pose` share MoveNet). An
MQTT frame is decoded at reduced size when the models' inputs are small (a 720p JPEG for a
192x192 model decodes at 640x360: about a quarter of the cost), then resized into buffers
allocated once. When a task's confidence is below its threshold and the camera's privacy
policy allows what the task would send, the cloud is asked (with a deadline).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agent import imaging
from agent.cloud.client import CloudClient
from agent.engine import TaskRuntime
from agent.errors import CloudError, EdgeAgentError
from agent.mqtt.topics import Topics
from agent.registry import LoadedModel
from agent.vision import pose
from agent.vision.config import CameraConfig
from agent.vision.events import FallDetector, PersonEvent, PersonTracker, RepCounter
from agent.vision.motion import MotionGate
from agent.vision.sources import Frame, FrameSlot, MqttSource, OpenCvSource
from agent.wire import dumps

log = logging.getLogger(__name__)


class FramePublisher(Protocol):
    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> bool: ...


@dataclass
class _Model:
    loaded: LoadedModel
    target: imaging.ModelInput


class _Timer:
    """Running totals of stage durations (ms)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.count: Counter[str] = Counter()

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] = self.total.get(stage, 0.0) + seconds * 1000.0
        self.count[stage] += 1

    def means(self) -> dict[str, float]:
        return {k: round(self.total[k] / self.count[k], 3) for k in self.count}


class CameraPipeline:
    def __init__(
        self,
        name: str,
        config: CameraConfig,
        runtimes: dict[str, TaskRuntime],
        *,
        publisher: FramePublisher,
        topics: Topics,
        cloud: CloudClient | None,
        num_threads: int,
        person_threshold: float,
        max_pixels: int,
        max_frame_bytes: int,
    ) -> None:
        self.name = name
        self.config = config
        self.runtimes = runtimes
        self._pub = publisher
        self._topics = topics
        self._cloud = cloud
        self._person_threshold = person_threshold
        self._max_pixels = max_pixels
        self.slot = FrameSlot()
        self.source: MqttSource | OpenCvSource
        if config.source.type == "mqtt":
            self.source = MqttSource(config.source, self.slot, max_frame_bytes)
        else:
            self.source = OpenCvSource(name, config.source, self.slot)
        self.gate = MotionGate(config.motion)
        self._models: dict[str, _Model] = {}
        for rt in runtimes.values():
            spec = rt.edge
            if spec is None or spec.name in self._models:
                continue
            height, width = spec.entry.input.shape[:2]
            mode = getattr(rt.task, "resize", "stretch")
            self._models[spec.name] = _Model(
                spec.load(num_threads), imaging.ModelInput(width, height, mode)
            )
        self._pose_model = next(
            (
                rt.edge.name
                for rt in runtimes.values()
                if rt.edge is not None and rt.task.name in ("pose", "person")
            ),
            None,
        )
        sizes = [(m.target.width, m.target.height) for m in self._models.values()]
        self._min_w = max((w for w, _ in sizes), default=1)
        self._min_h = max((h for _, h in sizes), default=1)
        self.tracker = PersonTracker(name, config.person)
        self.reps = RepCounter(config.reps)
        self.fall = FallDetector(config.fall)
        self.timer = _Timer()
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._occupied: bool | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"vision-{self.name}", daemon=True)
        self._thread.start()
        self.source.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.source.stop()
        self._stop.set()
        self.slot.close()
        if self._thread is not None:
            self._thread.join(timeout)
        event = self.tracker.close(time.time())
        if event is not None:
            self._publish_person(event, None)

    def _loop(self) -> None:
        while not self._stop.is_set():
            frame = self.slot.get(0.5)
            if frame is None:
                continue
            try:
                self.process(frame)
            except EdgeAgentError as exc:
                self.counts["frame_errors"] += 1
                log.debug("camera %s: frame skipped: %s", self.name, exc)
            except Exception:  # never let one bad frame kill the camera
                self.counts["frame_errors"] += 1
                log.exception("camera %s: unexpected error on a frame", self.name)

    # ------------------------------------------------------------------ per frame

    def decode(self, frame: Frame) -> np.ndarray[Any, np.dtype[np.uint8]]:
        if frame.image is not None:
            return frame.image
        assert frame.data is not None
        reduce = 1
        size = imaging.image_size(frame.data)
        if size is not None and frame.data.startswith(b"\xff\xd8"):
            reduce = imaging.reduce_factor(size[0], size[1], self._min_w, self._min_h)
        return imaging.decode_bgr(frame.data, self._max_pixels, reduce=reduce, field="frame")

    def process(self, frame: Frame) -> bool:
        """Analyse one frame. False when the motion gate skipped it."""
        t0 = time.perf_counter()
        bgr = self.decode(frame)
        t1 = time.perf_counter()
        self.timer.add("decode", t1 - t0)
        run = self.gate.check(bgr, frame.received)
        t2 = time.perf_counter()
        self.timer.add("motion", t2 - t1)
        if not run:
            return False
        outputs: dict[str, tuple[np.ndarray[Any, Any], imaging.Placement]] = {}
        for name, model in self._models.items():
            t3 = time.perf_counter()
            placement = model.target.fill(bgr)
            t4 = time.perf_counter()
            output = model.loaded.predict(model.target.rgb[np.newaxis])[0]
            self.timer.add("resize", t4 - t3)
            self.timer.add("invoke", time.perf_counter() - t4)
            outputs[name] = (output, placement)
        self.counts["analysed"] += 1
        for task in self.config.tasks:
            rt = self.runtimes[task]
            if rt.edge is None:
                continue
            output, placement = outputs[rt.edge.name]
            self._answer(rt, output, placement, frame)
        if self._pose_model is not None:
            output, placement = outputs[self._pose_model]
            self._pose_events(pose.keypoints(output, placement), bgr, frame)
        return True

    def _answer(
        self, rt: TaskRuntime, output: Any, placement: imaging.Placement, frame: Frame
    ) -> None:
        """Publish one task's result, asking the cloud first when the task is unsure and the
        camera's policy allows what it would send (events use the edge keypoints only)."""
        if not self.config.publish_results:
            return
        source = "edge"
        assert rt.edge is not None
        model = rt.edge.name
        if self._cloud is not None and rt.cloud_model and rt.task.confidence(output) < rt.threshold:
            cloud_input = rt.task.cloud_input(
                self._models[rt.edge.name].target.rgb.copy(), output, rt.privacy
            )
            if cloud_input is None:
                self.counts["cloud_privacy_blocked"] += 1
            else:
                try:
                    answer = self._cloud.infer(
                        rt.cloud_model,
                        cloud_input.name,
                        cloud_input.batch,
                        request_id=f"{self.name}-{next(self._ids)}",
                        deadline=time.monotonic() + self.config.cloud_timeout_s,
                        kind=cloud_input.kind,
                        privacy=rt.privacy,
                    )
                    output = rt.task.cloud_output(answer.outputs, rt.labels)
                    source, model = "cloud", answer.model
                    self.counts["cloud"] += 1
                except CloudError as exc:
                    self.counts[f"cloud_{exc.code}"] += 1
        payload = {
            "camera": self.name,
            "task": rt.name,
            "ts": round(frame.wall, 3),
            "source": source,
            "model": model,
            "result": rt.task.result(output, rt.labels, rt.config.top_k, placement),
        }
        self._pub.publish(self._topics.camera(self.name, "result", rt.name), dumps(payload), qos=0)

    def _pose_events(
        self, kp: pose.Keypoints, bgr: np.ndarray[Any, np.dtype[np.uint8]], frame: Frame
    ) -> None:
        score = pose.presence_score(kp)
        present = score >= self._person_threshold
        aspect = bgr.shape[1] / bgr.shape[0]
        occupied = present
        if self.config.person.enabled:
            event = self.tracker.update(present, score, pose.box(kp), frame.wall)
            if event is not None:
                self._publish_person(event, bgr)
            occupied = self.tracker.present  # debounced like the events
        if self._occupied is not occupied:
            self._occupied = occupied
            self._pub.publish(
                self._topics.camera(self.name, "person"), b"1" if occupied else b"0", retain=True
            )
        if self.config.reps.enabled and self.reps.update(kp if present else None, aspect):
            self._pub.publish(
                self._topics.camera(self.name, "reps"), str(self.reps.count).encode(), retain=True
            )
            self._event("rep", {"count": self.reps.count})
        if self.config.fall.enabled:
            change = self.fall.update(kp if present else None, frame.received, aspect)
            if change is not None:
                self._event(change, {"box": pose.box(kp)})

    def _publish_person(
        self, event: PersonEvent, bgr: np.ndarray[Any, np.dtype[np.uint8]] | None
    ) -> None:
        payload = event.payload()
        self.counts[f"person_{event.type}"] += 1
        log.info("camera %s: person %s (%s)", self.name, event.type, event.after["id"])
        self._pub.publish(self._topics.events, dumps(payload), qos=1)
        if event.type in ("start", "end"):
            self._event("person_enter" if event.type == "start" else "person_leave", {})
        cfg = self.config.person
        if event.snapshot and cfg.snapshot and bgr is not None:
            jpeg = imaging.encode_jpeg_limited(
                imaging.bgr_to_rgb(bgr), cfg.snapshot_max_bytes, cfg.snapshot_max_side
            )
            if jpeg is not None:
                self._pub.publish(
                    self._topics.camera(self.name, "person", "snapshot"), jpeg, qos=0, retain=True
                )

    def _event(self, event_type: str, extra: dict[str, Any]) -> None:
        """A Home Assistant `event` entity message (camera/<name>/event)."""
        self.counts[f"event_{event_type}"] += 1
        payload = {"event_type": event_type, "camera": self.name, "ts": round(time.time(), 3)}
        payload.update(extra)
        self._pub.publish(self._topics.camera(self.name, "event"), dumps(payload), qos=1)

    # ------------------------------------------------------------------ stats

    def snapshot(self) -> dict[str, Any]:
        counts = dict(self.counts)
        counts.update({f"slot_{k}": v for k, v in self.slot.counts.items()})
        counts.update({f"source_{k}": v for k, v in self.source.counts.items()})
        return {
            "connected": self.source.connected,
            "motion": self.gate.snapshot(),
            "counts": counts,
            "stage_ms": self.timer.means(),
            "person": self.tracker.present,
            "reps": self.reps.count if self.config.reps.enabled else None,
        }
