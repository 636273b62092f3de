"""The `cameras` and `vision` sections of the configuration (strict, like the rest).

Kept apart from `agent/config.py` so the camera options live next to the code that uses them;
`agent/config.py` imports these classes into the tree.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from agent.privacy import Privacy

VisionTask = Literal["person", "pose", "classify"]
CameraName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    type: Literal["mqtt", "opencv"] = Field(
        description="`mqtt`: JPEG/PNG/BMP frames published on a topic (Frigate snapshots, "
        "ESP32-CAM, ...); `opencv`: a V4L2 device, an RTSP/HTTP stream or a video file."
    )
    topic: str | None = Field(None, description="mqtt: the topic the frames arrive on.")
    url: str | None = Field(
        None,
        description="opencv: a device number (`0`), `/dev/video0`, an rtsp:// or http(s):// "
        "stream URL, or a video file path.",
    )
    fps: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Frames analysed per second at most; extra frames are skipped.",
    )
    width: int | None = Field(None, ge=16, le=8192, description="opencv: requested capture width.")
    height: int | None = Field(
        None, ge=16, le=8192, description="opencv: requested capture height."
    )
    loop: bool = Field(False, description="opencv: restart a video file at its end.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First delay before reopening a stream.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Cap of the reopen backoff.")

    @model_validator(mode="after")
    def _needs_target(self) -> SourceConfig:
        if self.type == "mqtt":
            if not self.topic:
                raise ValueError("type mqtt needs `topic`")
            if any(c in self.topic for c in "+#\x00"):
                raise ValueError("topic: one camera is one topic (no wildcards)")
        if self.type == "opencv" and not self.url:
            raise ValueError("type opencv needs `url`")
        return self


class MotionConfig(_Strict):
    enabled: bool = Field(True, description="Run the models only when the picture changes.")
    width: int = Field(160, ge=32, le=640, description="Width of the motion analysis image.")
    threshold: int = Field(
        25, ge=1, le=255, description="Per-pixel change (0-255) that counts as changed."
    )
    min_area: float = Field(
        0.003, gt=0, le=1, description="Share of the unmasked picture that must change."
    )
    alpha: float = Field(
        0.2, gt=0, le=1, description="How fast the background adapts to slow changes (light)."
    )
    hold_s: float = Field(3.0, ge=0, description="Keep analysing this long after the last motion.")
    refresh_s: float = Field(
        30.0, ge=0, description="Analyse a frame at least this often anyway (0: never)."
    )
    masks: list[tuple[float, float, float, float]] = Field(
        default_factory=list,
        description="Regions ignored by motion detection: [x1, y1, x2, y2], normalised 0..1 "
        "(a clock, a TV, trees in the wind).",
    )

    @field_validator("masks")
    @classmethod
    def _boxes(
        cls, value: list[tuple[float, float, float, float]]
    ) -> list[tuple[float, float, float, float]]:
        for x1, y1, x2, y2 in value:
            if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
                raise ValueError("each mask is [x1, y1, x2, y2] with 0 <= x1 < x2 <= 1, same for y")
        return value


class PersonEventsConfig(_Strict):
    enabled: bool = Field(True, description="Publish person start/update/end events.")
    min_frames: int = Field(
        2, ge=1, le=100, description="Analysed frames in a row with a person before `start`."
    )
    end_frames: int = Field(
        3, ge=1, le=100, description="Analysed frames in a row without a person before `end`."
    )
    update_interval_s: float = Field(
        5.0, gt=0, description="An `update` at most this often while the person stays."
    )
    snapshot: bool = Field(False, description="Publish a JPEG snapshot on its own topic.")
    snapshot_max_bytes: int = Field(
        100_000, ge=2_000, le=1_000_000, description="Snapshots are shrunk to fit this size."
    )
    snapshot_max_side: int = Field(640, ge=64, le=4096, description="Longest snapshot side.")


class RepsConfig(_Strict):
    enabled: bool = Field(False, description="Count squats (PE lessons) from the pose.")
    down_angle: float = Field(
        120.0,
        gt=0,
        lt=180,
        description="Knee angle (degrees) at or below which a squat is down (the shared "
        "squat.bmp, a school-PE squat, measures 115).",
    )
    up_angle: float = Field(
        155.0, gt=0, le=180, description="Knee angle at or above which the person stands again."
    )
    min_score: float = Field(0.3, ge=0, le=1, description="Keypoint score needed to use a joint.")


class FallConfig(_Strict):
    enabled: bool = Field(False, description="Detect falls (home care) from the pose.")
    drop: float = Field(
        0.2, gt=0, le=1, description="Drop of the torso centre (share of the image height)."
    )
    window_s: float = Field(2.0, gt=0, description="The time the drop must happen within.")
    horizontal_s: float = Field(
        2.0, ge=0, description="The body must then stay horizontal this long."
    )
    min_score: float = Field(0.3, ge=0, le=1, description="Keypoint score needed to use a joint.")


class CameraConfig(_Strict):
    source: SourceConfig
    tasks: list[VisionTask] = Field(
        default_factory=lambda: list[VisionTask](["person"]),
        description="Tasks run on each analysed frame (results on camera/<name>/result/<task>).",
    )
    privacy: Privacy = Field(
        "never",
        description="What may reach the cloud: `never` (no image bytes leave the device), "
        "`derived` (keypoints or labels only) or `frames`.",
    )
    publish_results: bool = Field(
        False, description="Publish every analysed frame's results (not only events)."
    )
    cloud_timeout_s: float = Field(2.0, gt=0, le=60, description="Deadline of a cloud call.")
    motion: MotionConfig = Field(default_factory=MotionConfig)  # type: ignore[arg-type]
    person: PersonEventsConfig = Field(default_factory=PersonEventsConfig)  # type: ignore[arg-type]
    reps: RepsConfig = Field(default_factory=RepsConfig)  # type: ignore[arg-type]
    fall: FallConfig = Field(default_factory=FallConfig)  # type: ignore[arg-type]


class VisionConfig(_Strict):
    request_privacy: Privacy = Field(
        "never",
        description="What of an image sent on the request API may reach the cloud "
        "(never / derived / frames).",
    )
    person_threshold: float = Field(
        0.4,
        gt=0,
        lt=1,
        description="`person` is present when the mean of the 5 best keypoint scores reaches "
        "this (docs/cameras.md has the evidence).",
    )
    pose_resize: Literal["stretch", "letterbox"] = Field(
        "stretch",
        description="How a frame becomes MoveNet's square input: `stretch` (what the "
        "reference output was made with) or `letterbox` (keeps the aspect of wide frames).",
    )
