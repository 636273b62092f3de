"""The pretrained vision models the agent knows: where they are published, their sha256, and
how to feed them. The files are not part of the project: `edge-agent models pull NAME`
downloads one into the models directory; the agent looks for the files in `models.dir`, then
in each of `models.extra_dirs` (e.g. a shared read-only copy).

All come from the Coral test-data repository (Apache-2.0), pinned to one commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.errors import ModelLoadError
from agent.registry import (
    InputSpec,
    ModelEntry,
    ModelSpec,
    OutputSpec,
    TaskEntry,
    TaskModels,
    sha256_file,
)
from agent.vision.pose import KEYPOINT_NAMES

CORAL_COMMIT = "104342d2d3480b3e66203073dac24f4e2dbb4c41"
BASE_URL = f"https://github.com/google-coral/test_data/raw/{CORAL_COMMIT}/"


@dataclass(frozen=True)
class CatalogFile:
    file: str
    sha256: str

    @property
    def url(self) -> str:
        return BASE_URL + self.file


@dataclass(frozen=True)
class CatalogModel:
    name: str
    task: Literal["pose", "classify"]  # `person` runs the pose model
    file: CatalogFile
    input_size: tuple[int, int]  # (width, height); uint8 RGB
    version: str
    description: str
    labels: CatalogFile | None = None
    batchable: bool = True  # MoveNet: no (fixed GATHER_ND indices fail on a batch > 1)

    @property
    def files(self) -> tuple[CatalogFile, ...]:
        return (self.file,) if self.labels is None else (self.file, self.labels)


_IMAGENET_LABELS = CatalogFile(
    "imagenet_labels.txt", "b8aaeb5630c62626a7d124a05c0e14230a7ffdd2136a31d0190a4fb71c1d82f1"
)

CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in (
        CatalogModel(
            name="movenet-lightning",
            task="pose",
            file=CatalogFile(
                "movenet_single_pose_lightning_ptq.tflite",
                "cd7cc22fa946e5d146a7b98d496853e1923e22828d3972d579973f27f91bb105",
            ),
            input_size=(192, 192),
            version="lightning-ptq",
            description="MoveNet single-pose lightning, int8 PTQ: 17 keypoints (y, x, score)",
            batchable=False,
        ),
        CatalogModel(
            name="mobilenet-v2",
            task="classify",
            file=CatalogFile(
                "mobilenet_v2_1.0_224_quant.tflite",
                "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776",
            ),
            input_size=(224, 224),
            version="v2-1.0-224-quant",
            description="MobileNet v2 1.0 224, int8: ImageNet, 1001 classes (0 = background)",
            labels=_IMAGENET_LABELS,
        ),
        CatalogModel(
            name="mobilenet-v1-0.25",
            task="classify",
            file=CatalogFile(
                "mobilenet_v1_0.25_128_quant.tflite",
                "cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785",
            ),
            input_size=(128, 128),
            version="v1-0.25-128-quant",
            description="MobileNet v1 0.25 128, int8: ImageNet, 1001 classes (Pi Zero class)",
            labels=_IMAGENET_LABELS,
        ),
    )
}

DEFAULT_MODEL = {
    "pose": "movenet-lightning",
    "person": "movenet-lightning",
    "classify": "mobilenet-v2",
}
# Default routing thresholds (`auto` asks the cloud below them). Pose and person: never by
# default (the cloud has no better pose model than the edge); classify: below 0.5 top-1.
DEFAULT_THRESHOLD = {"pose": 0.0, "person": 0.0, "classify": 0.5}


def find_file(name: str, dirs: list[Path]) -> Path | None:
    for directory in dirs:
        path = directory / name
        if path.is_file():
            return path
    return None


def read_labels(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ModelLoadError(str(path), exc.strerror or str(exc)) from None
    return tuple(line.strip() for line in lines if line.strip())


def model_for(task: str, name: str | None) -> CatalogModel:
    chosen = name or DEFAULT_MODEL[task]
    model = CATALOG.get(chosen)
    wanted = "pose" if task == "person" else task
    if model is None or model.task != wanted:
        fits = sorted(n for n, m in CATALOG.items() if m.task == wanted)
        raise ModelLoadError(chosen, f"not a {task} model; known: {', '.join(fits)}")
    return model


def task_models(
    task: str,
    model_name: str | None,
    dirs: list[Path],
    *,
    threshold: float | None = None,
    verify: bool = True,
) -> TaskModels:
    """The models of a vision task, found in `dirs` (first match wins). Raises
    ModelLoadError naming the `models pull` command when a file is missing."""
    model = model_for(task, model_name)
    path = find_file(model.file.file, dirs)
    if path is None:
        searched = ", ".join(str(d) for d in dirs) or "(no directory)"
        raise ModelLoadError(
            model.file.file,
            f"not found in {searched}; run `edge-agent models pull {model.name}` "
            "or add a directory holding it to models.extra_dirs",
        )
    if model.labels is not None:
        labels_path = find_file(model.labels.file, [path.parent, *dirs])
        if labels_path is None:
            raise ModelLoadError(
                model.labels.file, f"labels of {model.name} not found; run `models pull`"
            )
        if verify and sha256_file(labels_path) != model.labels.sha256:
            raise ModelLoadError(str(labels_path), "sha256 mismatch with the catalog")
        labels = read_labels(labels_path)
    elif task == "person":
        labels = ("person", "no_person")
    else:
        labels = KEYPOINT_NAMES
    width, height = model.input_size
    entry = ModelEntry(
        task=task,
        role="edge",
        file=model.file.file,
        sha256=model.file.sha256,
        version=model.version,
        batchable=model.batchable,
        input=InputSpec(shape=[height, width, 3], dtype="uint8"),
        output=OutputSpec(kind="keypoints" if model.task == "pose" else "probabilities"),
    )
    spec = ModelSpec(model.name, entry, path, labels)
    default = DEFAULT_THRESHOLD[task]
    return TaskModels(
        task=task,
        entry=TaskEntry(
            edge=model.name,
            threshold=default if threshold is None else threshold,
            labels=list(labels),
        ),
        edge=spec,
        reference=None,
        cloud=None,
        labels=labels,
    )
