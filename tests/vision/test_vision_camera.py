"""Cameras end to end in the real agent with a real mosquitto and the real models: a video
file assembled from the shared images, and frames published on MQTT."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from agent import imaging
from agent.app import Agent
from agent.config import Config
from agent.devtools.broker import Mosquitto
from agent.devtools.client import RequestClient
from agent.vision.sources import OpenCvSource
from tests.vision.conftest import fit, image_rgb, vision_config

RunAgent = Callable[[Config], AbstractContextManager[Agent]]


def _frames() -> list[np.ndarray[Any, Any]]:
    """Empty frames (a still room, then the cat walks in), a person, then empty again."""
    room = np.full((480, 640, 3), 90, dtype=np.uint8)
    room[300:, :] = 60  # a floor
    names = ("cat_720p.jpg", "grace_hopper.bmp", "squat.bmp")
    cat, grace, squat = (fit(image_rgb(n)) for n in names)
    return [room] * 8 + [cat] * 6 + [grace] * 6 + [squat] * 6 + [room] * 30


def _events(client: RequestClient) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, _ in client.messages if t.endswith("/events")]


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_video_file_gives_exactly_one_person_event(
    pretrained: Path, broker: Mosquitto, tmp_path: Path, run_agent: RunAgent
) -> None:
    video = tmp_path / "room.avi"
    imaging.write_video(str(video), _frames(), fps=10)
    config = vision_config(
        broker,
        tmp_path,
        f"""
cameras:
  hall:
    source: {{type: opencv, url: "{video}", fps: 20}}
    tasks: [person]
    motion: {{hold_s: 0.5, refresh_s: 0}}
    person: {{snapshot: true, snapshot_max_bytes: 12000, snapshot_max_side: 320}}
""",
    )
    root = f"edge-agent/{config.id}"
    subs = [f"{root}/events", f"{root}/camera/#"]
    with RequestClient(broker.host, broker.port, config.id, extra_subscriptions=subs) as client:
        with run_agent(config) as agent:
            assert agent.cameras is not None
            source = agent.cameras.cameras["hall"].source
            assert isinstance(source, OpenCvSource)
            assert _wait(source.finished.is_set, 30)
            time.sleep(0.5)  # the last frame's analysis
            stats = agent.stats_snapshot()["cameras"]["hall"]  # type: ignore[index]
        events = _events(client)
        assert [e["type"] for e in events] == ["start", "end"], events
        start, end = events
        assert start["after"]["id"] == end["after"]["id"]
        assert start["after"]["camera"] == "hall" and start["after"]["label"] == "person"
        assert end["after"]["end_time"] >= start["after"]["start_time"]
        assert end["after"]["active"] is False
        snapshots = [p for t, p, _ in client.messages if t.endswith("/person/snapshot")]
        assert snapshots and all(len(s) <= 12000 and s[:2] == b"\xff\xd8" for s in snapshots)
        occupancy = [p for t, p, _ in client.messages if t == f"{root}/camera/hall/person"]
        assert occupancy[-2:] == [b"1", b"0"]
        kinds = [json.loads(p)["event_type"] for t, p, _ in client.messages if t.endswith("/event")]
        assert kinds == ["person_enter", "person_leave"]
    motion = stats["motion"]
    counts = stats["counts"]
    assert counts["source_frames"] == 56
    # every frame is either looked at or, when analysis was busy, replaced by a newer one
    assert motion["frames"] + counts.get("slot_replaced", 0) == 56
    assert motion["skipped"] > 0  # the still room is not analysed
    assert 0 < motion["skipped_share"] < 1
    assert set(stats["stage_ms"]) >= {"decode", "motion", "resize", "invoke"}


def test_frames_published_on_mqtt(
    pretrained: Path, broker: Mosquitto, tmp_path: Path, run_agent: RunAgent
) -> None:
    config = vision_config(
        broker,
        tmp_path,
        """
cameras:
  door:
    source: {type: mqtt, topic: cams/door/frame, fps: 30}
    tasks: [person, classify]
    publish_results: true
    motion: {hold_s: 0.3, refresh_s: 0}
""",
    )
    root = f"edge-agent/{config.id}"
    jpegs = [imaging.encode_jpeg(f, 85) for f in _frames()]
    subs = [f"{root}/events", f"{root}/camera/#"]
    with (
        run_agent(config) as agent,
        RequestClient(broker.host, broker.port, config.id, extra_subscriptions=subs) as client,
    ):
        for jpeg in jpegs:
            client.publish_raw("cams/door/frame", jpeg, qos=0)
            time.sleep(0.06)
        assert _wait(lambda: len(_events(client)) >= 2, 10)
        time.sleep(0.3)
        stats = agent.stats_snapshot()["cameras"]["door"]  # type: ignore[index]
        assert [e["type"] for e in _events(client)] == ["start", "end"]
        results = [json.loads(p) for t, p, _ in client.messages if "/result/" in t]
        labels = {r["result"]["label"] for r in results if r["task"] == "classify"}
        assert "Egyptian cat" in labels and "military uniform" in labels
        persons = [r["result"]["person"] for r in results if r["task"] == "person"]
        assert True in persons and False in persons
        assert all(r["source"] == "edge" for r in results)
    assert stats["motion"]["skipped"] > 0
    assert stats["counts"]["source_messages"] == len(jpegs)


def test_a_camera_is_read_while_the_broker_is_down(
    pretrained: Path, broker: Mosquitto, tmp_path: Path
) -> None:
    """An agent (re)started during a broker outage reads its local camera at once: its
    events wait in the outbox, instead of the camera waiting for the broker."""
    video = tmp_path / "room.avi"
    imaging.write_video(str(video), _frames(), fps=10)
    config = vision_config(
        broker,
        tmp_path,
        f"""
state_dir: {tmp_path / "state"}
cameras:
  hall:
    source: {{type: opencv, url: "{video}", fps: 20}}
    tasks: [person]
    motion: {{hold_s: 0.5, refresh_s: 0}}
""",
    )
    broker.stop()
    agent = Agent(config)
    try:
        agent.start(connect_timeout=2)  # gives up waiting for the broker after 2 s
        assert not agent.mqtt.connected and agent.cameras is not None
        pipeline = agent.cameras.cameras["hall"]
        assert pipeline.source.counts["frames"] > 0, "frames read while waiting for the broker"
        assert isinstance(pipeline.source, OpenCvSource)
        assert _wait(pipeline.source.finished.is_set, 30)
        time.sleep(0.5)  # the last frame's analysis
        assert agent.state_db is not None
        stored = [r.message for r in agent.state_db.fetch(0, 1000)]
        events = [json.loads(m.payload) for m in stored if m.topic.endswith("/events")]
        assert [e["type"] for e in events] == ["start", "end"]
    finally:
        agent.shutdown()
