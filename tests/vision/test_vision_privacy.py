"""Privacy per camera (and for request-API images), checked where it matters: at the cloud.
The reference cloud service records every inference request body it receives."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from agent import imaging
from agent.app import Agent
from agent.cloud.client import CloudClient
from agent.config import CloudConfig, Config
from agent.devtools.broker import Mosquitto, free_port
from agent.devtools.client import RequestClient
from agent.devtools.procs import Process, start_cloud
from agent.errors import CloudError
from agent.privacy import allows
from tests.vision.conftest import empty_models_dir, fit, image_b64, image_rgb, vision_config

RunAgent = Callable[[Config], AbstractContextManager[Agent]]
IMAGE_MAGIC = ("/9j/", "iVBORw0KGgo", "Qk0")  # JPEG, PNG, BMP in base64


class Recording:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            return [json.loads(line) for line in fh.read().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cloud(
    pretrained: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Recording]]:
    tmp = tmp_path_factory.mktemp("cloud-record")
    record = tmp / "bodies.jsonl"
    proc: Process
    proc, url = start_cloud(
        empty_models_dir(tmp),
        tmp,
        extra_args=["--vision-dir", str(pretrained), "--record", str(record)],
    )
    yield url, Recording(record)
    proc.stop()


def _tensors(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return list(json.loads(entry["body"])["inputs"])


def _image_bytes_in(entries: list[dict[str, Any]]) -> list[str]:
    """Everything in the recorded bodies that could carry an image."""
    found = []
    for entry in entries:
        if any(magic in entry["body"] for magic in IMAGE_MAGIC):
            found.append(f"{entry['path']}: encoded image")
        for tensor in _tensors(entry):
            if tensor["datatype"] == "UINT8" or len(tensor["data"]) > 64:
                found.append(f"{entry['path']}: tensor {tensor['name']} {tensor['shape']}")
    return found


def _yaml(policy: str) -> str:
    return f"""
limits:
  max_payload_bytes: 4194304
vision:
  request_privacy: {policy}
tasks:
  pose: {{}}
  person: {{threshold: 1.0}}
  classify: {{threshold: 1.0}}
cameras:
  door:
    source: {{type: mqtt, topic: cams/door/frame, fps: 30}}
    tasks: [person, classify]
    privacy: {policy}
    publish_results: true
    motion: {{enabled: false}}
"""


def _exercise(
    broker: Mosquitto, config: Config, run_agent: RunAgent
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Requests on every task (auto and cloud routes) and camera frames; returns the
    answers by name, the camera results and the camera stats."""
    root = f"edge-agent/{config.id}"
    frames = [
        imaging.encode_jpeg(fit(image_rgb(n)), 85) for n in ("grace_hopper.bmp", "cat_720p.jpg")
    ]
    with (
        run_agent(config) as agent,
        RequestClient(
            broker.host, broker.port, config.id, extra_subscriptions=[f"{root}/camera/#"]
        ) as client,
    ):
        ids: dict[str, str] = {}
        for task in ("pose", "person", "classify"):
            for route in ("auto", "cloud"):
                ids[f"{task}-{route}"] = client.send(
                    task, {"image": image_b64("cat_720p.jpg")}, route=route
                )
        for jpeg in frames * 2:
            client.publish_raw("cams/door/frame", jpeg, qos=0)
            time.sleep(0.3)
        assert client.wait_for(list(ids.values()), 30)
        time.sleep(1.0)
        stats = agent.stats_snapshot()["cameras"]["door"]  # type: ignore[index]
        results = [json.loads(p) for t, p, _ in client.messages if "/result/" in t]
        return {k: client.answers[v][0] for k, v in ids.items()}, results, stats


def test_never_sends_no_image_bytes(
    cloud: tuple[str, Recording], broker: Mosquitto, tmp_path: Path, run_agent: RunAgent
) -> None:
    url, recording = cloud
    recording.mark()
    config = vision_config(broker, tmp_path, _yaml("never"), cloud_url=url)
    answers, results, stats = _exercise(broker, config, run_agent)
    entries = recording.since_mark()
    assert _image_bytes_in(entries) == []
    assert entries == []  # nothing at all: every cloud call needed image-derived data
    for task in ("pose", "person", "classify"):
        answer = answers[f"{task}-cloud"]
        assert answer["ok"] and answer["source"] == "edge"
        assert answer["degraded"] is True and answer["degraded_reason"] == "privacy"
    assert results and all(r["source"] == "edge" for r in results)
    assert stats["counts"]["cloud_privacy_blocked"] >= 4


def test_derived_sends_keypoints_only(
    cloud: tuple[str, Recording], broker: Mosquitto, tmp_path: Path, run_agent: RunAgent
) -> None:
    url, recording = cloud
    recording.mark()
    config = vision_config(broker, tmp_path, _yaml("derived"), cloud_url=url)
    answers, results, stats = _exercise(broker, config, run_agent)
    entries = recording.since_mark()
    assert entries and _image_bytes_in(entries) == []
    for entry in entries:
        assert entry["path"] == "/v2/models/person/infer"
        (tensor,) = _tensors(entry)
        assert tensor["name"] == "keypoints" and tensor["shape"] == [1, 17, 3]
        assert tensor["datatype"] == "FP32"
    assert answers["person-cloud"]["source"] == "cloud"
    assert answers["person-cloud"]["result"]["person"] is False  # a cat
    for task in ("pose", "classify"):
        assert answers[f"{task}-cloud"]["degraded_reason"] == "privacy"
    assert {r["source"] for r in results if r["task"] == "person"} == {"cloud"}
    assert {r["source"] for r in results if r["task"] == "classify"} == {"edge"}
    assert stats["counts"]["cloud"] >= 4


def test_frames_lets_pixels_reach_the_cloud(
    cloud: tuple[str, Recording], broker: Mosquitto, tmp_path: Path, run_agent: RunAgent
) -> None:
    url, recording = cloud
    recording.mark()
    config = vision_config(broker, tmp_path, _yaml("frames"), cloud_url=url)
    answers, _, _ = _exercise(broker, config, run_agent)
    classify = [e for e in recording.since_mark() if e["path"] == "/v2/models/classify/infer"]
    assert classify
    (tensor,) = _tensors(classify[0])
    assert tensor["datatype"] == "UINT8" and tensor["shape"] == [1, 224, 224, 3]
    answer = answers["classify-cloud"]
    assert answer["source"] == "cloud" and answer["result"]["label"] == "Egyptian cat"
    assert answers["pose-cloud"]["source"] == "cloud"
    assert len(answers["pose-cloud"]["result"]["keypoints"]) == 17


def test_the_cloud_client_refuses_before_sending() -> None:
    client = CloudClient(CloudConfig(url=f"http://127.0.0.1:{free_port()}"))  # type: ignore[call-arg]
    import numpy as np

    batch = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    for policy, kind in (("never", "frames"), ("never", "derived"), ("derived", "frames")):
        with pytest.raises(CloudError) as err:
            client.infer(
                "m",
                "input",
                batch,
                request_id="x",
                deadline=time.monotonic() + 1,
                kind=kind,
                privacy=policy,  # type: ignore[arg-type]
            )
        assert err.value.code == "privacy"
    assert client.privacy_refused == 3 and client.failures == 0
    client.close()


@pytest.mark.parametrize(
    ("policy", "kind", "allowed"),
    [
        (None, "features", True),
        ("never", "features", False),
        (None, "frames", False),
        (None, "derived", False),
        ("never", "derived", False),
        ("derived", "derived", True),
        ("derived", "frames", False),
        ("frames", "frames", True),
        ("frames", "derived", True),
    ],
)
def test_policy_table(policy: Any, kind: Any, allowed: bool) -> None:
    assert allows(policy, kind) is allowed
