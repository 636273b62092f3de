"""The model registry CLI and the calibrated cascade, over MQTT too (issue 3)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.devtools.broker import Mosquitto
from agent.devtools.client import RequestClient
from agent.evaluation import evaluate
from agent.registry import Registry, load_testset
from agent.tasks import TASKS
from tests.conftest import DEPLOY_CONFIG, MODELS
from tests.helpers import agent_config, running_agent

EVAL_TASKS = [
    name for name, t in Registry(MODELS).manifest.tasks.items() if t.testset and name in TASKS
]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_models_verify_passes() -> None:
    result = _cli("models", "verify", "--models", str(MODELS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all models verified" in result.stdout


def test_models_list_json_has_labels_in_class_order() -> None:
    result = _cli("models", "list", "--json", "--models", str(MODELS))
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["tasks"]["digits"]["labels"] == [str(i) for i in range(10)]
    for name, model in manifest["models"].items():
        assert len(model["sha256"]) == 64, name


def test_flipped_byte_makes_run_fail_naming_the_file(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    spec = Registry(models).task("digits").edge
    assert spec is not None
    data = bytearray(spec.path.read_bytes())
    data[100] ^= 0x01
    spec.path.write_bytes(bytes(data))
    env_result = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(DEPLOY_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"EDGE_AGENT_MODELS__DIR": str(models), "PATH": "/usr/bin:/bin"},
    )
    assert env_result.returncode == 78
    assert str(spec.path) in env_result.stderr and "sha256 mismatch" in env_result.stderr
    verify = _cli("models", "verify", "--models", str(models))
    assert verify.returncode == 1 and str(spec.path) in verify.stdout


@pytest.mark.parametrize("task", EVAL_TASKS)
def test_models_eval_prints_the_table_and_writes_the_plot(task: str, tmp_path: Path) -> None:
    plot = tmp_path / f"{task}.png"
    result = _cli("models", "eval", task, "--models", str(MODELS), "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    for row in ("edge only", "cloud only", "cascade", "sent to the cloud", "agreement"):
        assert row in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((MODELS / task / "report.json").read_text())["test"]
    ev = evaluate(MODELS, task)
    assert ev.edge_accuracy == pytest.approx(report["edge_int8_accuracy"], abs=1e-9)
    assert ev.cascade_accuracy == pytest.approx(report["cascade_accuracy"], abs=1e-9)
    assert ev.offload_share == pytest.approx(report["offload_share"], abs=1e-9)


@pytest.mark.parametrize("task", EVAL_TASKS)
def test_auto_route_over_mqtt_reproduces_the_eval_cascade(
    task: str, broker: Mosquitto, cloud_url: str
) -> None:
    ev = evaluate(MODELS, task)
    models = Registry(MODELS).task(task)
    assert models.testset is not None
    x, y = load_testset(models.testset)
    config = agent_config(broker, cloud_url)
    with running_agent(config), RequestClient(broker.host, broker.port, config.id) as c:
        ids = [
            c.send(task, TASKS[task].request_input(x[i]), deadline_ms=30_000) for i in range(len(x))
        ]
        assert c.wait_for(ids, 120)
    answers = [c.answers[r][0] for r in ids]
    assert all(a["ok"] and not a["degraded"] for a in answers)
    labels = list(models.labels)
    predicted = np.array([labels.index(a["result"]["label"]) for a in answers])
    accuracy = float((predicted == y).mean())
    offload = float(np.mean([a["source"] == "cloud" for a in answers]))
    assert abs(accuracy - ev.cascade_accuracy) <= 0.01
    assert abs(offload - ev.offload_share) <= 0.01
