"""The TFLite backend and the registry on real models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ModelLoadError
from agent.registry import Registry, load_testset
from agent.runtime.tflite import TFLiteModel, runtime_name
from tests.conftest import MODELS, shared_file


def test_runtime_is_named() -> None:
    assert runtime_name().split()[0] in {"ai-edge-litert", "tflite-runtime"}


def test_digits_int8_reproduces_the_reported_test_accuracy() -> None:
    registry = Registry(MODELS)
    task = registry.task("digits")
    assert task.edge is not None and task.testset is not None
    task.edge.verify()
    model = task.edge.load(num_threads=1)
    assert model.runtime.input.dtype == np.int8 and model.runtime.input.quantized
    x, y = load_testset(task.testset)
    probs = model.predict(x)
    assert probs.dtype == np.float32 and probs.shape == (len(x), 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=0.05)
    accuracy = float((probs.argmax(axis=1) == y).mean())
    report = json.loads((MODELS / "digits" / "report.json").read_text())
    assert accuracy == pytest.approx(report["test"]["edge_int8_accuracy"], abs=1e-9)
    assert accuracy >= 0.97


def test_batched_equals_one_at_a_time() -> None:
    spec = Registry(MODELS).task("digits").edge
    assert spec is not None
    model = spec.load(num_threads=1)
    x, _ = load_testset(MODELS / "digits" / "testset.npz")
    batched = model.predict(x[:16])
    single = np.concatenate([model.predict(x[i : i + 1]) for i in range(16)])
    assert np.array_equal(batched, single)


def test_mobilenet_uint8_passes_through() -> None:
    from agent.imaging import decode_image, resize

    path = shared_file("models/pretrained/mobilenet_v2_1.0_224_quant.tflite")
    labels = shared_file("models/pretrained/imagenet_labels.txt").read_text().splitlines()
    image = shared_file("images/cat_720p.jpg").read_bytes()
    model = TFLiteModel(path, num_threads=2)
    rgb = resize(decode_image(image, 10**8, gray=False), 224, 224)
    probs = model.predict(rgb[np.newaxis])
    assert "cat" in labels[int(probs[0].argmax())].lower()


def test_broken_model_is_refused_naming_the_file() -> None:
    path = shared_file("models/invalid/model_invoking_error.tflite")
    with pytest.raises(ModelLoadError) as err:
        TFLiteModel(path)
    assert str(path) in str(err.value)


def test_garbage_and_missing_files_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match=r"junk\.tflite"):
        TFLiteModel(junk)
    with pytest.raises(ModelLoadError, match="no such file"):
        TFLiteModel(tmp_path / "absent.tflite")


def test_a_flipped_byte_fails_the_hash_check_naming_both_hashes(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    spec = Registry(models).task("digits").edge
    assert spec is not None
    data = bytearray(spec.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    spec.path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError) as err:
        spec.verify()
    assert str(spec.path) in str(err.value)
    assert spec.entry.sha256 in str(err.value)
    problems = [p for _, _, p in Registry(models).verify_all() if p]
    assert len(problems) == 1


@pytest.mark.parametrize("task", ["digits", "appliance", "activity"])
def test_agent_features_equal_the_training_reference(task: str) -> None:
    """agent/tasks/features.py reimplements models/training/features.py (numpy only)."""
    import importlib.util

    from agent.tasks.features import FEATURES

    spec = importlib.util.spec_from_file_location(
        "training_features", MODELS / "training" / "features.py"
    )
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    registry = Registry(MODELS)
    testset = registry.task(task).testset
    assert testset is not None
    x, _ = load_testset(testset)
    names = {m.input.features for m in registry.manifest.models.values() if m.task == task}
    for name in names:
        assert np.array_equal(FEATURES[name](x), reference.TRANSFORMS[name](x)), name
