"""Camera benchmark: frames/s of the agent's camera path on a 720p JPEG, with and without
motion gating, and where the time goes (decode vs resize vs invoke; full vs reduced decode).

    python -m agent.vision.bench [--image cat_720p.jpg] [--frames 150] [--threads 1] [--json]

`camera_benchmark()` returns a dict (the `edge-agent bench` command embeds it). Frames are
fed to the real `CameraPipeline.process` as MQTT frames (JPEG bytes), timestamped as a
camera at `camera_fps` would send them, so the motion gate's hold time applies as in use.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent import imaging
from agent.config import Config, TaskConfig
from agent.engine import TaskRuntime
from agent.mqtt.topics import Topics
from agent.runtime.tflite import runtime_name
from agent.tasks import TASKS
from agent.vision.camera import CameraPipeline
from agent.vision.catalog import task_models
from agent.vision.config import CameraConfig
from agent.vision.sources import Frame

SHARED = Path(__file__).resolve().parents[3] / "shared"
DEFAULT_IMAGE = SHARED / "images" / "cat_720p.jpg"
DEFAULT_DIRS = [Path("models"), SHARED / "models" / "pretrained"]
_MAX_PIXELS = 64_000_000


class _NullPublisher:
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        return True


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return round(statistics.median(times), 3)


def _runtime(task: str, model: str | None, dirs: list[Path]) -> TaskRuntime:
    models = task_models(task, model, dirs)
    return TaskRuntime(
        task=TASKS[task].bind(models, Config()),  # type: ignore[call-arg]
        config=TaskConfig(),  # type: ignore[call-arg]
        labels=models.labels,
        threshold=0.0,
        edge=models.edge,
        cloud_model=None,
    )


def _pipeline(rt: TaskRuntime, gating: bool, num_threads: int) -> CameraPipeline:
    camera = CameraConfig.model_validate(
        {
            "source": {"type": "mqtt", "topic": "bench/frames"},
            "tasks": [rt.name],
            "motion": {"enabled": gating},
        }
    )
    return CameraPipeline(
        "bench",
        camera,
        {rt.name: rt},
        publisher=_NullPublisher(),
        topics=Topics("bench", "bench"),
        cloud=None,
        num_threads=num_threads,
        person_threshold=0.4,
        max_pixels=_MAX_PIXELS,
        max_frame_bytes=64 * 1024 * 1024,
    )


def _run(pipeline: CameraPipeline, frames: list[bytes], camera_fps: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    for i, data in enumerate(frames):
        pipeline.process(Frame(received=i / camera_fps, wall=time.time(), data=data))
    elapsed = time.perf_counter() - t0
    gate = pipeline.gate.snapshot()
    return {
        "fps": round(len(frames) / elapsed, 1),
        "frames": len(frames),
        "analysed": pipeline.counts["analysed"],
        "skipped_share": gate["skipped_share"],
        "stage_ms": pipeline.timer.means(),
    }


def camera_benchmark(
    image: Path = DEFAULT_IMAGE,
    *,
    task: str = "person",
    model: str | None = None,
    dirs: list[Path] | None = None,
    frames: int = 150,
    camera_fps: float = 15.0,
    num_threads: int = 1,
    repeats: int = 30,
) -> dict[str, Any]:
    """Measure the camera path on `image` (a JPEG). Raises ModelLoadError when the model
    file is not found in `dirs` (default: ./models, then ../shared/models/pretrained)."""
    dirs = dirs if dirs is not None else DEFAULT_DIRS
    data = image.read_bytes()
    size = imaging.image_size(data)
    if size is None or not data.startswith(b"\xff\xd8"):
        raise ValueError(f"{image}: the camera benchmark needs a JPEG")
    width, height = size
    rt = _runtime(task, model, dirs)
    assert rt.edge is not None
    in_h, in_w = rt.edge.entry.input.shape[:2]
    factor = imaging.reduce_factor(width, height, in_w, in_h)
    loaded = rt.edge.load(num_threads)
    target = imaging.ModelInput(in_w, in_h, getattr(rt.task, "resize", "stretch"))
    full = imaging.decode_bgr(data, _MAX_PIXELS)
    reduced = imaging.decode_bgr(data, _MAX_PIXELS, reduce=factor)
    target.fill(reduced)
    batch = target.rgb[np.newaxis]
    split = {
        "decode_full": _median_ms(lambda: imaging.decode_bgr(data, _MAX_PIXELS), repeats),
        "decode_reduced": _median_ms(
            lambda: imaging.decode_bgr(data, _MAX_PIXELS, reduce=factor), repeats
        ),
        "resize_from_full": _median_ms(lambda: target.fill(full), repeats),
        "resize_from_reduced": _median_ms(lambda: target.fill(reduced), repeats),
        "invoke": _median_ms(lambda: loaded.predict(batch), repeats),
    }
    split["full_path"] = round(
        split["decode_full"] + split["resize_from_full"] + split["invoke"], 3
    )
    split["reduced_path"] = round(
        split["decode_reduced"] + split["resize_from_reduced"] + split["invoke"], 3
    )
    # A changing scene: the picture alternates with its mirror image, so every frame moves.
    mirrored = imaging.encode_jpeg(np.ascontiguousarray(imaging.bgr_to_rgb(full)[:, ::-1]), 90)
    static = [data] * frames
    moving = [data if i % 2 == 0 else mirrored for i in range(frames)]
    return {
        "image": str(image),
        "width": width,
        "height": height,
        "task": task,
        "model": rt.edge.name,
        "model_input": [in_w, in_h],
        "reduce_factor": factor,
        "num_threads": num_threads,
        "runtime": runtime_name(),
        "split_ms": split,
        "camera_fps": camera_fps,
        # the same frames as the moving scene, so the two differ only by the gate's cost
        "no_gating": _run(_pipeline(rt, False, num_threads), moving, camera_fps),
        "gating_static_scene": _run(_pipeline(rt, True, num_threads), static, camera_fps),
        "gating_moving_scene": _run(_pipeline(rt, True, num_threads), moving, camera_fps),
    }


def format_report(r: dict[str, Any]) -> str:
    s = r["split_ms"]
    lines = [
        f"camera benchmark: {r['image']} ({r['width']}x{r['height']} JPEG), task {r['task']}, "
        f"model {r['model']} {r['model_input'][0]}x{r['model_input'][1]}, "
        f"{r['num_threads']} thread(s), {r['runtime']}",
        f"  decode full       {s['decode_full']:7.2f} ms   "
        f"resize from full    {s['resize_from_full']:6.2f} ms",
        f"  decode 1/{r['reduce_factor']}        {s['decode_reduced']:7.2f} ms   "
        f"resize from reduced {s['resize_from_reduced']:6.2f} ms",
        f"  invoke            {s['invoke']:7.2f} ms",
        f"  per frame: full decode path {s['full_path']:.2f} ms, "
        f"reduced decode path {s['reduced_path']:.2f} ms",
    ]
    for key, label in (
        ("no_gating", "no motion gating"),
        ("gating_static_scene", "gating, static scene"),
        ("gating_moving_scene", "gating, moving scene"),
    ):
        run = r[key]
        lines.append(
            f"  {label:<22} {run['fps']:7.1f} frames/s  "
            f"(analysed {run['analysed']}/{run['frames']}, skipped {run['skipped_share']:.0%})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.vision.bench", description=__doc__)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--task", choices=["person", "pose", "classify"], default="person")
    parser.add_argument("--model", help="catalog model (default: the task's default)")
    parser.add_argument("--models-dir", type=Path, action="append", help="where models are")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = camera_benchmark(
        args.image,
        task=args.task,
        model=args.model,
        dirs=args.models_dir,
        frames=args.frames,
        num_threads=args.threads,
    )
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
