"""Write a task's files: models, test split, report.json, CARD.md, plot, manifest."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .pipeline import Trained, save_npz_deterministic, sha256_bytes
from .runtime import TFLiteModel
from .task import Task

FEATURES_DOC = "FEATURES.md"


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _model_info(path: Path) -> dict[str, Any]:
    m = TFLiteModel(path)
    return {
        "input_dtype": np.dtype(m.inp["dtype"]).name,
        "output_dtype": np.dtype(m.out["dtype"]).name,
        "input_shape": [int(v) for v in m.inp["shape"]],
        "output_shape": [int(v) for v in m.out["shape"]],
        "input_quantization": {"scale": m.input_quant[0], "zero_point": m.input_quant[1]},
        "output_quantization": {"scale": m.output_quant[0], "zero_point": m.output_quant[1]},
        "ops": TFLiteModel(path, delegates=False).ops(),
    }


def write_all(task: Task, report: dict[str, Any], models_root: Path, repo_root: Path) -> None:
    out = models_root / task.name
    out.mkdir(parents=True, exist_ok=True)
    blobs: Trained = report.pop("_blobs")
    x_test, y_test = report.pop("_testset")
    edge_shape, cloud_shape = report.pop("_input_shapes")

    files = {
        "edge": (f"{task.name}_edge_int8.tflite", blobs.edge_int8),
        "reference": (f"{task.name}_edge_float.tflite", blobs.edge_float),
        "cloud": (f"{task.name}_cloud.tflite", blobs.cloud),
    }
    for name, blob in files.values():
        (out / name).write_bytes(blob)
    testset = save_npz_deterministic(out / "testset.npz", x=x_test, y=y_test)

    info = {role: _model_info(out / name) for role, (name, _) in files.items()}
    report["files"] = {
        role: {
            "file": f"{task.name}/{name}",
            "bytes": len(blob),
            "sha256": sha256_bytes(blob),
            **info[role],
        }
        for role, (name, blob) in files.items()
    }
    report["files"]["testset"] = {
        "file": f"{task.name}/testset.npz",
        "bytes": len(testset),
        "sha256": sha256_bytes(testset),
    }
    report["labels"] = task.labels
    report["classes"] = task.classes
    report["features"] = {"edge": task.edge.features, "cloud": task.cloud.features}
    _atomic_write(out / "report.json", json.dumps(report, indent=2) + "\n")

    _plot(task, report, repo_root / "docs" / "img" / f"cascade_{task.name}.png")
    _atomic_write(out / "CARD.md", _card(task, report, edge_shape, cloud_shape))
    _update_manifest(task, report, models_root, edge_shape, cloud_shape)


def _plot(task: Task, report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    t = report["test"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, style, label in (
        ("sweep_validation", "--", "validation (calibration)"),
        ("sweep_test", "-", "test"),
    ):
        rows = sorted(report[key], key=lambda r: (r["offload_share"], r["threshold"]))
        ax.plot(
            [r["offload_share"] for r in rows],
            [r["cascade_accuracy"] for r in rows],
            style,
            marker=".",
            ms=3,
            label=label,
        )
    ax.axhline(
        t["cloud_accuracy"],
        color="grey",
        lw=0.8,
        ls=":",
        label=f"cloud only ({t['cloud_accuracy']:.3f})",
    )
    ax.axvline(
        task.offload_goal,
        color="red",
        lw=0.8,
        ls=":",
        label=f"offload goal ({task.offload_goal:.0%})",
    )
    ax.plot(
        [t["offload_share"]],
        [t["cascade_accuracy"]],
        "r*",
        ms=12,
        label=f"chosen: threshold {report['threshold']:.4f}\n(test acc {t['cascade_accuracy']:.3f}, offload {t['offload_share']:.1%})",
    )
    ax.set_xlabel("offload share (fraction of requests sent to the cloud)")
    ax.set_ylabel("cascade accuracy")
    ax.set_title(f"{task.name}: edge int8 + cloud cascade")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def _final_models_note(task: Task) -> str:
    """What the final models were fitted on, given how the threshold was calibrated."""
    if task.calibration_time_split:
        return (
            " (the whole training split, after calibrating the threshold on predictions for each half of every "
            "training sequence by models trained identically on the other halves)."
        )
    if task.calibration_folds == 1:
        return " (the training split minus the calibration hold-out, so the calibrated threshold applies to exactly these models)."
    return " (the whole training split, after calibrating the threshold on out-of-fold predictions of per-fold models trained identically)."


def _card(task: Task, r: dict[str, Any], edge_shape: list[int], cloud_shape: list[int]) -> str:
    t, c, f = r["test"], r["calibration"], r["files"]
    eq, oq = f["edge"]["input_quantization"], f["edge"]["output_quantization"]
    lines = [
        f"# Model card: {task.name} (v{task.version})",
        "",
        f"**Task:** {task.title}. Edge model `{task.name}-edge` (int8 TFLite) answers locally; when its top "
        f"probability is below the calibrated threshold **{r['threshold']}** the agent asks `{task.name}-cloud`. "
        f"`{task.name}-edge-float` is the float32 twin of the edge network, used only to measure quantisation loss.",
        "",
        "## Inputs",
        "",
        f"- Canonical request input: float32 array of shape `{list(r['canonical_shape'])}` per sample. {task.feature_notes.get('canonical', '')}",
        f"- Edge (int8 and float) feature transform: `{task.edge.features}` -> float32 `{edge_shape}`. {task.feature_notes.get(task.edge.features, '')}",
        f"- Cloud feature transform: `{task.cloud.features}` -> float32 `{cloud_shape}`. {task.feature_notes.get(task.cloud.features, '')}",
        f"- Exact formulas: `models/{FEATURES_DOC}`; numpy reference implementation: `models/training/features.py`.",
        "- All models take a batch dimension first (converted with batch 1; the agent invokes one sample at a time).",
        "",
        "## Outputs and labels",
        "",
        f"All three models output class probabilities `[N, {len(task.labels)}]` (softmax inside the graph). "
        "Predicted class = `argmax` (first index on ties); index i corresponds to:",
        "",
        "| index | raw class value | label |",
        "|---:|---|---|",
        *[
            f"| {i} | `{cv}` | {lab} |"
            for i, (cv, lab) in enumerate(zip(task.classes, task.labels, strict=True))
        ],
        "",
        task.label_notes,
        "",
        "## Quantisation (edge int8)",
        "",
        "Full-integer post-training quantisation (TFLite converter, `Optimize.DEFAULT`, representative dataset = all "
        "edge-model inputs of the training samples the model was fitted on, `supported_ops=[TFLITE_BUILTINS_INT8]`, int8 input and output).",
        "",
        f"- input: int8, scale `{eq['scale']!r}`, zero point `{eq['zero_point']}` -> `q = clip(round_half_even(x / scale) + zero_point, -128, 127)`",
        f"- output: int8, scale `{oq['scale']!r}`, zero point `{oq['zero_point']}` -> `p = (q - zero_point) * scale` (float32)",
        "",
        "## Training data",
        "",
        task.data_source,
        "",
        f"Data licence: {task.data_license}",
        "",
        f"Threshold calibration: {c['method']} of the training split ({c['n_validation']} validation "
        f"{'half-sequences' if task.calibration_time_split else 'samples'}, seed 0). "
        f"The threshold is the one with the best validation cascade accuracy among those sending at most "
        f"{_pct(task.offload_budget)} of validation requests to the cloud (ties: lowest offload share). The threshold was chosen without looking at the test split.",
        f"Final models were fitted on {r['n_train_final_models']} training samples"
        + _final_models_note(task),
        "",
        "## Architecture",
        "",
        f"- Edge: {task.edge.architecture}",
        f"- Cloud: {task.cloud.architecture}",
        "",
        "## Metrics",
        "",
        f"Test split: {t['n']} samples, evaluated with ai-edge-litert exactly as the agent does (numpy feature transform, "
        "quantise -> invoke -> dequantise, one sample at a time).",
        "",
        "| metric | test | validation |",
        "|---|---:|---:|",
        f"| edge float32 accuracy | {_pct(t['edge_float_accuracy'])} | {_pct(c['edge_float_accuracy'])} |",
        f"| edge int8 accuracy | {_pct(t['edge_int8_accuracy'])} | {_pct(c['edge_int8_accuracy'])} |",
        f"| int8-vs-float top-1 agreement | {_pct(t['int8_float_agreement'])} | |",
        f"| cloud accuracy | {_pct(t['cloud_accuracy'])} | {_pct(c['cloud_accuracy'])} |",
        f"| cascade accuracy @ {r['threshold']} | {_pct(t['cascade_accuracy'])} | {_pct(c['cascade_accuracy'])} |",
        f"| offload share @ {r['threshold']} | {_pct(t['offload_share'])} | {_pct(c['offload_share'])} |",
        "",
        f"Full threshold sweeps: `models/{task.name}/report.json`; plot: `docs/img/cascade_{task.name}.png`.",
        "",
        *(["## Caveats", "", task.caveats, ""] if task.caveats else []),
        "## Files",
        "",
        "| role | file | bytes | sha256 |",
        "|---|---|---:|---|",
        *[f"| {role} | `{v['file']}` | {v['bytes']} | `{v['sha256']}` |" for role, v in f.items()],
        "",
        f"Cloud model operators (all TFLite builtins): {', '.join(f['cloud']['ops'])}.",
        "",
        "## Retraining",
        "",
        "```sh",
        "pip install -e '.[train]'   # or use .venv-train",
        f"TF_CPP_MIN_LOG_LEVEL=2 python models/train.py --task {task.name}",
        "python models/verify_runtime.py   # in the runtime venv (numpy + ai-edge-litert only)",
        "```",
        "",
        "Training is seeded (`keras.utils.set_random_seed(0)`, op determinism enabled) and runs on CPU.",
        "",
    ]
    return "\n".join(lines)


def rewrite_docs(task: Task, models_root: Path, repo_root: Path) -> None:
    """Regenerate CARD.md and the plot from an existing report.json (no training)."""
    report = json.loads((models_root / task.name / "report.json").read_text())
    manifest = json.loads((models_root / "manifest.json").read_text())
    edge_shape = manifest["models"][f"{task.name}-edge"]["input"]["shape"]
    cloud_shape = manifest["models"][f"{task.name}-cloud"]["input"]["shape"]
    _plot(task, report, repo_root / "docs" / "img" / f"cascade_{task.name}.png")
    _atomic_write(models_root / task.name / "CARD.md", _card(task, report, edge_shape, cloud_shape))


def _update_manifest(
    task: Task, r: dict[str, Any], models_root: Path, edge_shape: list[int], cloud_shape: list[int]
) -> None:
    path = models_root / "manifest.json"
    manifest: dict[str, Any] = {"schema_version": 1, "tasks": {}, "models": {}}
    if path.exists():
        manifest = json.loads(path.read_text())
    f = r["files"]
    n = task.name
    manifest["tasks"][n] = {
        "edge": f"{n}-edge",
        "reference": f"{n}-edge-float",
        "cloud": f"{n}-cloud",
        "threshold": r["threshold"],
        "labels": task.labels,
        "classes": task.classes,
        "testset": f["testset"]["file"],
        "testset_sha256": f["testset"]["sha256"],
    }
    specs = {
        f"{n}-edge": ("edge", task.edge.features, edge_shape),
        f"{n}-edge-float": ("reference", task.edge.features, edge_shape),
        f"{n}-cloud": ("cloud", task.cloud.features, cloud_shape),
    }
    for model_id, (role, feat, shape) in specs.items():
        manifest["models"][model_id] = {
            "task": n,
            "role": role,
            "format": "tflite",
            "file": f[role]["file"],
            "sha256": f[role]["sha256"],
            "version": task.version,
            "card": f"{n}/CARD.md",
            "input": {"shape": shape, "dtype": "float32", "features": feat},
            "output": {"kind": "probabilities", "classes": len(task.labels)},
        }
    manifest["tasks"] = dict(sorted(manifest["tasks"].items()))
    manifest["models"] = dict(sorted(manifest["models"].items()))
    _atomic_write(path, json.dumps(manifest, indent=2) + "\n")


def write_models_doc(models_root: Path, repo_root: Path) -> None:
    """docs/models.md: one section per trained task, from its report.json."""
    manifest = json.loads((models_root / "manifest.json").read_text())
    out = [
        "# Model zoo",
        "",
        "Generated by `models/train.py` from `models/<task>/report.json`; do not edit by hand. "
        "Each task has an int8 edge model, its float32 twin (reference, for measuring quantisation loss) and a float32 "
        "cloud model, all TFLite. The agent answers with the edge model and asks the cloud model when the edge top "
        "probability is below the task's threshold. Canonical inputs and feature transforms: `models/FEATURES.md`; "
        "details per task: `models/<task>/CARD.md`. Figures are on each task's held-out test split, computed with "
        "ai-edge-litert exactly as the agent does (re-check: `python models/verify_runtime.py`).",
        "",
    ]
    for name in sorted(manifest["tasks"]):
        r = json.loads((models_root / name / "report.json").read_text())
        t, f = r["test"], r["files"]
        out += [
            f"## {name}",
            "",
            f"Threshold **{r['threshold']}** (calibrated on {r['calibration']['method']} predictions of the training split, "
            f"offload budget {_pct(r['offload_budget_validation'])} on validation). Test split: {t['n']} samples. "
            f"Card: [`models/{name}/CARD.md`](../models/{name}/CARD.md).",
            "",
            "| model | file | size | test accuracy |",
            "|---|---|---:|---:|",
            f"| edge int8 (`{name}-edge`) | `{f['edge']['file']}` | {f['edge']['bytes'] / 1024:.1f} KiB | {_pct(t['edge_int8_accuracy'])} |",
            f"| edge float32 (`{name}-edge-float`) | `{f['reference']['file']}` | {f['reference']['bytes'] / 1024:.1f} KiB | {_pct(t['edge_float_accuracy'])} |",
            f"| cloud float32 (`{name}-cloud`) | `{f['cloud']['file']}` | {f['cloud']['bytes'] / 1024:.1f} KiB | {_pct(t['cloud_accuracy'])} |",
            f"| **cascade** (edge int8 -> cloud below {r['threshold']}) | | | **{_pct(t['cascade_accuracy'])}** |",
            "",
            f"Offload share at the threshold: **{_pct(t['offload_share'])}** of test requests (goal <= {_pct(r['offload_goal_test'])}). "
            f"int8-vs-float top-1 agreement: {_pct(t['int8_float_agreement'])}.",
            "",
            f"![cascade accuracy vs offload share, {name}](img/cascade_{name}.png)",
            "",
        ]
    path = repo_root / "docs" / "models.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, "\n".join(out))
