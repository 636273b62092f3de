"""Motion gating: run the models only when the picture changes.

Cheap frame differencing (imaging.FrameDiff: a small blurred gray copy against a slowly
adapting background, masked regions ignored). A frame is analysed when enough of the picture
changed, for `hold_s` after the last change (so a person who stops moving is still seen a
little while), and at least every `refresh_s` anyway (so a scene that changed slowly is
re-read). Counts say how many frames were skipped.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import numpy.typing as npt

from agent import imaging
from agent.vision.config import MotionConfig


class MotionGate:
    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self._diff = imaging.FrameDiff(config.width, config.threshold, config.alpha, config.masks)
        self._last_motion = float("-inf")
        self._last_run = float("-inf")
        self.last_share = 0.0
        self.counts: Counter[str] = Counter()

    def check(self, bgr: npt.NDArray[np.uint8], now: float) -> bool:
        """Should this frame be analysed? `now` is time.monotonic() of the frame."""
        self.counts["frames"] += 1
        cfg = self.config
        if not cfg.enabled:
            self.counts["analysed"] += 1
            return True
        self.last_share = self._diff.update(bgr)
        if self.last_share >= cfg.min_area:
            self._last_motion = now
            self.counts["motion"] += 1
        run = now - self._last_motion <= cfg.hold_s or (
            cfg.refresh_s > 0 and now - self._last_run >= cfg.refresh_s
        )
        if run:
            self._last_run = now
            self.counts["analysed"] += 1
        else:
            self.counts["skipped"] += 1
        return run

    def snapshot(self) -> dict[str, float | int]:
        frames = self.counts["frames"]
        return {
            "frames": frames,
            "analysed": self.counts["analysed"],
            "skipped": self.counts["skipped"],
            "skipped_share": round(self.counts["skipped"] / frames, 4) if frames else 0.0,
            "motion_frames": self.counts["motion"],
        }
