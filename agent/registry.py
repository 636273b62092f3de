"""The model registry: `models/manifest.json`, sha256 checks, and the models of each task."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import ModelLoadError
from agent.runtime.tflite import TFLiteModel
from agent.tasks.features import FEATURES, Feature

MANIFEST = "manifest.json"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class InputSpec(_Loose):
    shape: list[int]
    dtype: str = "float32"
    features: str = "identity"


class OutputSpec(_Loose):
    kind: Literal["probabilities", "keypoints"] = "probabilities"
    classes: int | None = None


class ModelEntry(_Loose):
    task: str
    role: Literal["edge", "reference", "cloud"]
    format: Literal["tflite"] = "tflite"
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    version: str = "0"
    batchable: bool = True  # False: one sample per invoke (the batch axis is not resizable)
    card: str | None = None
    input: InputSpec
    output: OutputSpec = Field(default_factory=OutputSpec)


class TaskEntry(_Loose):
    edge: str | None = None
    reference: str | None = None
    cloud: str | None = None
    threshold: float = Field(0.5, ge=0, le=1)
    labels: list[str]
    classes: list[str] | None = None
    testset: str | None = None
    testset_sha256: str | None = None


class Manifest(_Loose):
    schema_version: int = 1
    tasks: dict[str, TaskEntry] = Field(default_factory=dict)
    models: dict[str, ModelEntry] = Field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """A model file with what it needs to run: its features and its labels."""

    name: str
    entry: ModelEntry
    path: Path
    labels: tuple[str, ...]

    @property
    def version(self) -> str:
        return self.entry.version

    @property
    def feature(self) -> Feature:
        return FEATURES[self.entry.input.features]

    def verify(self) -> None:
        """Raise ModelLoadError when the file is missing or its sha256 differs."""
        if not self.path.is_file():
            raise ModelLoadError(str(self.path), "no such file")
        actual = sha256_file(self.path)
        if actual != self.entry.sha256:
            raise ModelLoadError(
                str(self.path),
                f"sha256 mismatch: manifest says {self.entry.sha256}, file is {actual}",
            )

    def load(self, num_threads: int) -> LoadedModel:
        return LoadedModel(self, TFLiteModel(self.path, num_threads, self.entry.batchable))


@dataclass
class LoadedModel:
    """One interpreter of a model: use from one thread only."""

    spec: ModelSpec
    runtime: TFLiteModel

    def predict(self, canonical: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        return self.runtime.predict(self.spec.feature(canonical))


@dataclass(frozen=True)
class TaskModels:
    task: str
    entry: TaskEntry
    edge: ModelSpec | None
    reference: ModelSpec | None
    cloud: ModelSpec | None
    testset: Path | None = None
    labels: tuple[str, ...] = field(default=())


class Registry:
    """The manifest of a models directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        path = directory / MANIFEST
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ModelLoadError(str(path), exc.strerror or str(exc)) from None
        except json.JSONDecodeError as exc:
            raise ModelLoadError(str(path), f"not valid JSON: {exc}") from None
        try:
            self.manifest = Manifest.model_validate(raw)
        except ValidationError as exc:
            raise ModelLoadError(str(path), str(exc)) from None
        for name, model in self.manifest.models.items():
            if model.input.features not in FEATURES:
                raise ModelLoadError(
                    str(directory / model.file),
                    f"unknown feature transform {model.input.features!r}",
                )
            if model.task not in self.manifest.tasks:
                raise ModelLoadError(str(path), f"model {name} names unknown task {model.task}")

    def spec(self, name: str) -> ModelSpec:
        entry = self.manifest.models[name]
        task = self.manifest.tasks[entry.task]
        return ModelSpec(name, entry, self.directory / entry.file, tuple(task.labels))

    def task(self, name: str) -> TaskModels:
        entry = self.manifest.tasks.get(name)
        if entry is None:
            raise ModelLoadError(str(self.directory / MANIFEST), f"no models for task {name!r}")

        def get(model: str | None) -> ModelSpec | None:
            return self.spec(model) if model else None

        return TaskModels(
            task=name,
            entry=entry,
            edge=get(entry.edge),
            reference=get(entry.reference),
            cloud=get(entry.cloud),
            testset=self.directory / entry.testset if entry.testset else None,
            labels=tuple(entry.labels),
        )

    def verify_all(self) -> list[tuple[str, Path, str | None]]:
        """(model name, path, problem or None) for every model in the manifest."""
        results: list[tuple[str, Path, str | None]] = []
        for name in self.manifest.models:
            spec = self.spec(name)
            try:
                spec.verify()
                results.append((name, spec.path, None))
            except ModelLoadError as exc:
                results.append((name, spec.path, exc.reason))
        for name, task in self.manifest.tasks.items():
            if task.testset and task.testset_sha256:
                path = self.directory / task.testset
                if not path.is_file():
                    results.append((f"{name} testset", path, "no such file"))
                elif (actual := sha256_file(path)) != task.testset_sha256:
                    results.append(
                        (
                            f"{name} testset",
                            path,
                            f"sha256 mismatch: manifest says {task.testset_sha256}, "
                            f"file is {actual}",
                        )
                    )
                else:
                    results.append((f"{name} testset", path, None))
        return results


def load_testset(path: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    with np.load(path) as data:
        return data["x"].astype(np.float32), data["y"].astype(np.int64)
