"""The camera benchmark runs on the shared 720p JPEG and reports what the issue asks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.vision.bench import camera_benchmark
from tests.conftest import shared_file


def test_camera_benchmark_reports_fps_and_the_split(pretrained: Path) -> None:
    image = shared_file("images/cat_720p.jpg")
    r = camera_benchmark(image, dirs=[pretrained], frames=90, repeats=5)
    assert (r["width"], r["height"]) == (1280, 720) and r["reduce_factor"] == 2
    split = r["split_ms"]
    for key in ("decode_full", "decode_reduced", "resize_from_full", "resize_from_reduced"):
        assert split[key] > 0
    assert split["invoke"] > 0
    assert split["reduced_path"] < split["full_path"]
    for key in ("no_gating", "gating_static_scene", "gating_moving_scene"):
        assert r[key]["fps"] > 0 and r[key]["frames"] == 90
    assert r["no_gating"]["skipped_share"] == 0
    assert r["gating_static_scene"]["skipped_share"] > 0.4  # 90 frames at 15 fps = 6 s; a 3 s hold
    assert r["gating_moving_scene"]["skipped_share"] == 0


def test_standalone_command(pretrained: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.vision.bench",
            "--frames",
            "20",
            "--models-dir",
            str(pretrained),
            "--image",
            str(shared_file("images/cat_720p.jpg")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "frames/s" in out.stdout and "decode 1/2" in out.stdout
