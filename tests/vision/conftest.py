"""Fixtures of the camera tests: the shared pretrained models and images (tests skip, saying
why, when ../shared is absent), and an in-process agent configured from YAML."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent import imaging
from agent.app import Agent
from agent.config import Config, load_config
from agent.devtools.broker import Mosquitto
from tests.conftest import SHARED, shared_file
from tests.helpers import running_agent

PRETRAINED = SHARED / "models" / "pretrained"
IMAGES = SHARED / "images"
MOVENET = "movenet_single_pose_lightning_ptq.tflite"


@pytest.fixture(scope="session")
def pretrained() -> Path:
    """The shared pretrained models directory (skips when the models are absent)."""
    for name in (MOVENET, "mobilenet_v2_1.0_224_quant.tflite", "imagenet_labels.txt"):
        shared_file(f"models/pretrained/{name}")
    return PRETRAINED


def image_bytes(name: str) -> bytes:
    return shared_file(f"images/{name}").read_bytes()


def image_b64(name: str) -> str:
    return base64.b64encode(image_bytes(name)).decode()


def image_rgb(name: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return imaging.bgr_to_rgb(imaging.decode_bgr(image_bytes(name), 10**8))


def fit(rgb: np.ndarray[Any, Any], width: int = 640, height: int = 480) -> np.ndarray[Any, Any]:
    """An image letterboxed onto a width x height canvas (RGB)."""
    target = imaging.ModelInput(width, height, "letterbox")
    target.fill(imaging.rgb_to_bgr(rgb))
    return target.rgb.copy()


def empty_models_dir(tmp_path: Path) -> Path:
    """A models directory whose manifest has no task: the camera tests do not depend on
    the project's own models (their manifest changes as they are trained)."""
    directory = tmp_path / "models"
    directory.mkdir(exist_ok=True)
    (directory / "manifest.json").write_text(
        '{"schema_version": 1, "tasks": {}, "models": {}}', encoding="utf-8"
    )
    return directory


def write_config(tmp_path: Path, yaml_text: str) -> Path:
    path = tmp_path / "agent.yaml"
    models = empty_models_dir(tmp_path)
    path.write_text(f"models:\n  dir: {models}\n" + yaml_text, encoding="utf-8")
    return path


def vision_config(
    broker: Mosquitto, tmp_path: Path, yaml_text: str, cloud_url: str | None = None
) -> Config:
    env = {
        "EDGE_AGENT_ID": f"v{uuid.uuid4().hex[:8]}",
        "EDGE_AGENT_MQTT__HOST": broker.host,
        "EDGE_AGENT_MQTT__PORT": str(broker.port),
        "EDGE_AGENT_MODELS__EXTRA_DIRS": f'["{PRETRAINED}"]',
    }
    if cloud_url is not None:
        env["EDGE_AGENT_CLOUD__URL"] = cloud_url
    return load_config(write_config(tmp_path, yaml_text), environ=env)


@pytest.fixture
def run_agent() -> Callable[[Config], AbstractContextManager[Agent]]:
    return running_agent
