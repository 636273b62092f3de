"""Shared fixtures: real mosquitto brokers, the real cloud service, the real models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.devtools.broker import Mosquitto
from agent.devtools.procs import Process, start_cloud

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
DEPLOY_CONFIG = REPO / "deploy" / "agent.yaml"
SHARED = Path(os.environ.get("EDGE_AGENT_SHARED_DIR", REPO.parent / "shared"))


def shared_file(relative: str) -> Path:
    """A file from ../shared, or skip the test with the reason."""
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(
            f"shared asset {path} is absent (tests that need it run where ../shared exists)"
        )
    return path


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


@pytest.fixture(scope="module")
def module_broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


@pytest.fixture(scope="session")
def cloud_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str]]:
    proc, url = start_cloud(MODELS, tmp_path_factory.mktemp("cloud"))
    yield proc, url
    proc.stop()


@pytest.fixture
def cloud_url(cloud_service: tuple[Process, str]) -> str:
    return cloud_service[1]
