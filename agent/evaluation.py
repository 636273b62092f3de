"""`edge-agent models eval TASK`: the edge/cloud trade-off on the task's test split.

Runs the device (int8) model, its float twin and the cloud model with the same runtime and
feature transforms the agent uses, then simulates the agent's `auto` cascade: the cloud
answers when the device's top score is below the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import ModelLoadError
from agent.imaging import line_chart
from agent.registry import ModelSpec, Registry, load_testset


@dataclass(frozen=True)
class SweepPoint:
    threshold: float
    offload_share: float
    cascade_accuracy: float


@dataclass(frozen=True)
class Evaluation:
    task: str
    n: int
    threshold: float
    edge_accuracy: float
    float_accuracy: float | None
    cloud_accuracy: float | None
    int8_float_agreement: float | None
    cascade_accuracy: float
    offload_share: float
    sweep: list[SweepPoint]

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["sweep"] = [p.__dict__ for p in self.sweep]
        return out


def _predict(
    spec: ModelSpec, x: npt.NDArray[np.float32], batch: int = 64
) -> npt.NDArray[np.float32]:
    model = spec.load(num_threads=1)
    return np.concatenate([model.predict(x[i : i + batch]) for i in range(0, len(x), batch)])


def cascade(
    edge: npt.NDArray[np.float32],
    cloud: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    threshold: float,
) -> tuple[float, float]:
    """(accuracy, offload share) of the agent's auto route at `threshold`."""
    offload = edge.max(axis=1) < threshold
    answer = np.where(offload, cloud.argmax(axis=1), edge.argmax(axis=1))
    return float((answer == y).mean()), float(offload.mean())


def evaluate(models_dir: Path, task: str) -> Evaluation:
    registry = Registry(models_dir)
    models = registry.task(task)
    if models.testset is None:
        raise ModelLoadError(str(models_dir / "manifest.json"), f"task {task} has no test split")
    if models.edge is None:
        raise ModelLoadError(str(models_dir / "manifest.json"), f"task {task} has no edge model")
    x, y = load_testset(models.testset)
    for spec in (models.edge, models.reference, models.cloud):
        if spec is not None:
            spec.verify()
    edge = _predict(models.edge, x)
    ref = _predict(models.reference, x) if models.reference else None
    cloud = _predict(models.cloud, x) if models.cloud else None
    threshold = models.entry.threshold
    cloud_or_edge = cloud if cloud is not None else edge
    cascade_accuracy, offload = cascade(edge, cloud_or_edge, y, threshold)
    levels = np.unique(np.concatenate([edge.max(axis=1), [0.0, 1.0 + 1e-6]]))
    sweep = []
    for t in levels:
        acc, share = cascade(edge, cloud_or_edge, y, float(t))
        sweep.append(SweepPoint(float(t), share, acc))
    return Evaluation(
        task=task,
        n=len(y),
        threshold=threshold,
        edge_accuracy=float((edge.argmax(axis=1) == y).mean()),
        float_accuracy=float((ref.argmax(axis=1) == y).mean()) if ref is not None else None,
        cloud_accuracy=float((cloud.argmax(axis=1) == y).mean()) if cloud is not None else None,
        int8_float_agreement=(
            float((edge.argmax(axis=1) == ref.argmax(axis=1)).mean()) if ref is not None else None
        ),
        cascade_accuracy=cascade_accuracy,
        offload_share=offload,
        sweep=sweep,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:6.2f} %"


def format_table(ev: Evaluation) -> str:
    rows = [
        ("edge only (int8, on the device)", _pct(ev.edge_accuracy)),
        ("edge float32 twin", _pct(ev.float_accuracy)),
        ("int8 vs float agreement", _pct(ev.int8_float_agreement)),
        ("cloud only", _pct(ev.cloud_accuracy)),
        (f"cascade (auto, threshold {ev.threshold:.4f})", _pct(ev.cascade_accuracy)),
        ("share of requests sent to the cloud", _pct(ev.offload_share)),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"task {ev.task}: test split, {ev.n} samples", ""]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def write_plot(ev: Evaluation, path: Path) -> None:
    points = sorted(ev.sweep, key=lambda p: (p.offload_share, p.cascade_accuracy))
    xs = np.array([p.offload_share for p in points])
    ys = np.array([p.cascade_accuracy for p in points])
    low = float(min(ys.min(), ev.edge_accuracy)) - 0.01
    high = min(1.0, float(ys.max()) + 0.01)
    png = line_chart(
        xs,
        ys,
        marker=(ev.offload_share, ev.cascade_accuracy),
        title=f"{ev.task}: cascade accuracy vs share sent to the cloud (test split)",
        xlabel="share of requests sent to the cloud",
        ylabel="cascade accuracy",
        y_range=(max(0.0, low), high),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
