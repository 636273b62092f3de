"""The vision tasks through the real agent and a real mosquitto, on the real pretrained
models and the shared images: MoveNet against its published reference output, the person
threshold, MobileNet's labels, and bad inputs."""

from __future__ import annotations

import csv
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from agent.app import Agent
from agent.config import Config
from agent.devtools.broker import Mosquitto
from agent.devtools.client import RequestClient
from agent.vision.pose import KEYPOINT_NAMES
from tests.vision.conftest import image_b64, vision_config

RunAgent = Callable[[Config], AbstractContextManager[Agent]]

# The BMPs are about 0.9 MB: 1.2 MB once in base64, over the default 1 MiB payload limit.
TASKS_YAML = """
limits:
  max_payload_bytes: 4194304
tasks:
  pose: {}
  person: {}
  classify: {}
"""


def reference(pretrained: Path) -> list[dict[str, float]]:
    path = pretrained / "movenet_single_pose_lightning_ptq_reference.csv"
    with path.open(encoding="utf-8") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def answers(
    pretrained: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], dict[str, object]]:
    """Every (task, image) answered once by one agent."""
    from agent.app import Agent

    images = ["squat.bmp", "grace_hopper.bmp", "face.jpg", "cat_720p.jpg", "hot_dog.jpg"]
    with Mosquitto() as broker:
        config = vision_config(broker, tmp_path_factory.mktemp("req"), TASKS_YAML)
        agent = Agent(config)
        agent.start(connect_timeout=10)
        try:
            with RequestClient(broker.host, broker.port, config.id) as client:
                ids = {
                    (task, name): client.send(task, {"image": image_b64(name)}, route="edge")
                    for task in ("pose", "person", "classify")
                    for name in images
                }
                assert client.wait_for(list(ids.values()), 60)
                return {key: client.answers[rid][0] for key, rid in ids.items()}
        finally:
            agent.shutdown()


def test_movenet_through_the_agent_matches_the_reference(
    answers: dict[tuple[str, str], dict[str, object]], pretrained: Path
) -> None:
    answer = answers[("pose", "squat.bmp")]
    assert answer["ok"] is True and answer["source"] == "edge"
    assert answer["model"] == "movenet-lightning"
    keypoints = answer["result"]["keypoints"]  # type: ignore[index]
    assert [k["name"] for k in keypoints] == list(KEYPOINT_NAMES)
    checked = 0
    for ref, got in zip(reference(pretrained), keypoints, strict=True):
        assert 0.0 <= got["x"] <= 1.0 and 0.0 <= got["y"] <= 1.0
        if ref["keypoint_score"] >= 0.3:
            checked += 1
            assert abs(got["x"] - ref["keypoint_x"]) <= 0.05, got
            assert abs(got["y"] - ref["keypoint_y"]) <= 0.05, got
    assert checked == 16  # every keypoint but the one the reference scores 0.297


@pytest.mark.parametrize(
    ("image", "present"),
    [
        ("grace_hopper.bmp", True),
        ("squat.bmp", True),
        ("face.jpg", True),
        ("cat_720p.jpg", False),
        ("hot_dog.jpg", False),
    ],
)
def test_person_presence_threshold_on_the_shared_images(
    answers: dict[tuple[str, str], dict[str, object]], image: str, present: bool
) -> None:
    result = answers[("person", image)]["result"]
    assert result["person"] is present, result  # type: ignore[index]
    assert result["label"] == ("person" if present else "no_person")  # type: ignore[index]
    # margin from the 0.4 threshold, so the decision is not a coin toss
    assert abs(result["score"] - 0.4) >= 0.1  # type: ignore[index]


@pytest.mark.parametrize(
    ("image", "label"),
    [("cat_720p.jpg", "Egyptian cat"), ("grace_hopper.bmp", "military uniform")],
)
def test_mobilenet_labels(
    answers: dict[tuple[str, str], dict[str, object]], image: str, label: str
) -> None:
    answer = answers[("classify", image)]
    assert answer["model"] == "mobilenet-v2"
    assert answer["result"]["label"] == label  # type: ignore[index]
    assert len(answer["result"]["top"]) == 3  # type: ignore[index]


def test_bad_images_are_answered_with_errors(
    pretrained: Path, broker: Mosquitto, tmp_path: Path, run_agent: RunAgent
) -> None:
    config = vision_config(broker, tmp_path, "tasks:\n  pose: {}\n")
    with run_agent(config), RequestClient(broker.host, broker.port, config.id) as client:
        ids = {
            "invalid_input": client.send("pose", {"image": "not base64!"}),
            "invalid_image": client.send("pose", {"image": "aGVsbG8="}),
            "invalid_input ": client.send("pose", {"image": image_b64("face.jpg"), "x": 1}),
        }
        assert client.wait_for(list(ids.values()), 20)
        for code, rid in ids.items():
            answer = client.answers[rid][0]
            assert answer["ok"] is False and answer["error"]["code"] == code.strip()
