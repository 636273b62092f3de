"""Re-check the model zoo with the agent's runtime only (numpy + ai-edge-litert).

    python models/verify_runtime.py [--task digits ...]

For every task in models/manifest.json: checks file hashes, loads each TFLite
file with ai_edge_litert, checks the int8 edge model's input/output types and
quantisation parameters, then runs the numpy feature transforms and
quantise -> invoke -> dequantise on testset.npz and requires the accuracies,
int8/float agreement, cascade accuracy and offload share to equal the figures
in models/<task>/report.json exactly.  Exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

MODELS_ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(MODELS_ROOT))

from training import cascade, features  # noqa: E402
from training.runtime import TFLiteModel  # noqa: E402

EDGE_MAX_BYTES = 100 * 1024


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_task(name: str, manifest: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    task = manifest["tasks"][name]
    report = json.loads((MODELS_ROOT / name / "report.json").read_text())
    testset_path = MODELS_ROOT / task["testset"]
    if _sha256(testset_path) != task["testset_sha256"]:
        errors.append(f"{name}: testset sha256 mismatch")
    with np.load(testset_path) as npz:
        x, y = npz["x"], npz["y"]
    if x.dtype != np.float32 or y.dtype != np.int64:
        errors.append(f"{name}: testset dtypes {x.dtype}/{y.dtype}, want float32/int64")
    n_classes = len(task["labels"])
    if len(task["classes"]) != n_classes:
        errors.append(f"{name}: labels/classes length differ")

    proba: dict[str, np.ndarray] = {}
    for role in ("edge", "reference", "cloud"):
        model_id = task[role]
        spec = manifest["models"][model_id]
        path = MODELS_ROOT / spec["file"]
        if _sha256(path) != spec["sha256"]:
            errors.append(f"{model_id}: sha256 mismatch")
        model = TFLiteModel(path)
        in_dtype, out_dtype = np.dtype(model.inp["dtype"]), np.dtype(model.out["dtype"])
        if list(model.inp["shape"][1:]) != spec["input"]["shape"]:
            errors.append(
                f"{model_id}: input shape {model.inp['shape']} != manifest {spec['input']['shape']}"
            )
        if list(model.out["shape"]) != [1, n_classes]:
            errors.append(f"{model_id}: output shape {model.out['shape']}")
        if role == "edge":
            if in_dtype != np.int8 or out_dtype != np.int8:
                errors.append(f"{model_id}: input/output {in_dtype}/{out_dtype}, want int8/int8")
            in_scale, in_zp = model.input_quant
            out_scale, out_zp = model.output_quant
            if not (0 < in_scale < 1e3 and -128 <= in_zp <= 127):
                errors.append(f"{model_id}: odd input quantisation {in_scale}, {in_zp}")
            # softmax output: [0, 1] on 256 levels
            if (out_scale, out_zp) != (1.0 / 256.0, -128):
                errors.append(
                    f"{model_id}: output quantisation {out_scale}, {out_zp}, want 1/256, -128"
                )
            if path.stat().st_size > EDGE_MAX_BYTES:
                errors.append(f"{model_id}: {path.stat().st_size} bytes > {EDGE_MAX_BYTES}")
        elif in_dtype != np.float32 or out_dtype != np.float32:
            errors.append(f"{model_id}: input/output {in_dtype}/{out_dtype}, want float32")
        p = model.predict(features.apply(spec["input"]["features"], x))
        if not np.allclose(p.sum(axis=1), 1.0, atol=0.05):
            errors.append(f"{model_id}: outputs are not probabilities")
        proba[role] = p

    pred, off = cascade.cascade_predict(proba["edge"], proba["cloud"], task["threshold"])
    got = {
        "edge_float_accuracy": float(np.mean(proba["reference"].argmax(1) == y)),
        "edge_int8_accuracy": float(np.mean(proba["edge"].argmax(1) == y)),
        "cloud_accuracy": float(np.mean(proba["cloud"].argmax(1) == y)),
        "int8_float_agreement": float(
            np.mean(proba["edge"].argmax(1) == proba["reference"].argmax(1))
        ),
        "cascade_accuracy": float(np.mean(pred == y)),
        "offload_share": float(np.mean(off)),
    }
    if report["threshold"] != task["threshold"]:
        errors.append(
            f"{name}: threshold in manifest {task['threshold']} != report {report['threshold']}"
        )
    for key, value in got.items():
        if value != report["test"][key]:
            errors.append(f"{name}: {key} = {value} but report.json says {report['test'][key]}")
    print(
        f"{name}: "
        + "  ".join(f"{k}={v:.4f}" for k, v in got.items())
        + f"  threshold={task['threshold']}"
    )
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--task", action="append", help="task(s) to check (default: all in the manifest)"
    )
    args = parser.parse_args(argv)
    manifest = json.loads((MODELS_ROOT / "manifest.json").read_text())
    if manifest.get("schema_version") != 1:
        print("manifest schema_version != 1", file=sys.stderr)
        return 1
    errors: list[str] = []
    for name in args.task or sorted(manifest["tasks"]):
        errors += verify_task(name, manifest)
    if "tensorflow" in sys.modules:
        errors.append("tensorflow was imported: the runtime check must not need it")
    for e in errors:
        print("FAIL:", e, file=sys.stderr)
    print("OK" if not errors else f"{len(errors)} problem(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
