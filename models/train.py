"""Train one task of the model zoo and write its artefacts.

    TF_CPP_MIN_LOG_LEVEL=2 python models/train.py --task digits

Writes models/<task>/{<task>_edge_int8.tflite, <task>_edge_float.tflite,
<task>_cloud.tflite, testset.npz, report.json, CARD.md},
docs/img/cascade_<task>.png, updates models/manifest.json and regenerates
docs/models.md from the report.json of every task in the manifest.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bit-reproducible CPU kernels

MODELS_ROOT = Path(__file__).resolve().parent
REPO_ROOT = MODELS_ROOT.parent
TASKS = ("digits", "appliance", "activity")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument(
        "--docs-only",
        action="store_true",
        help="do not train: regenerate CARD.md, the plot and docs/models.md from the existing report.json",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    sys.path.insert(0, str(MODELS_ROOT))
    from training import artifacts, pipeline

    task = importlib.import_module(f"training.{args.task}").TASK
    if args.docs_only:
        artifacts.rewrite_docs(task, MODELS_ROOT, REPO_ROOT)
        artifacts.write_models_doc(MODELS_ROOT, REPO_ROOT)
        return 0
    report = pipeline.run(task)
    artifacts.write_all(task, report, MODELS_ROOT, REPO_ROOT)
    artifacts.write_models_doc(MODELS_ROOT, REPO_ROOT)
    t = report["test"]
    print(
        f"{task.name}: edge float {t['edge_float_accuracy']:.4f}  int8 {t['edge_int8_accuracy']:.4f}  "
        f"cloud {t['cloud_accuracy']:.4f}  cascade {t['cascade_accuracy']:.4f}  "
        f"offload {t['offload_share']:.3f} @ threshold {report['threshold']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
