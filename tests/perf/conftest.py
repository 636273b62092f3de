"""Fixtures of the performance tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def digits_models(tmp_path: Path) -> Path:
    """A models dir with just the digits task (other tasks may be mid-training)."""
    src = REPO / "models"
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["tasks"] = {"digits": manifest["tasks"]["digits"]}
    manifest["models"] = {k: v for k, v in manifest["models"].items() if v["task"] == "digits"}
    out = tmp_path / "models"
    shutil.copytree(src / "digits", out / "digits")
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out
