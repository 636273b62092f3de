"""Home Assistant discovery of the camera entities, against a real mosquitto: retained
configs, re-announce when Home Assistant comes online, stale entities cleared."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from agent.app import Agent
from agent.config import Config
from agent.devtools.broker import Mosquitto
from agent.devtools.client import RequestClient
from tests.vision.conftest import vision_config

RunAgent = Callable[[Config], AbstractContextManager[Agent]]


def _configs(client: RequestClient) -> list[tuple[str, bytes]]:
    return [(t, p) for t, p, _ in client.messages if t.endswith("/config")]


def test_discovery_announce_reannounce_and_cleanup(
    pretrained: Path, broker: Mosquitto, tmp_path: Path, run_agent: RunAgent
) -> None:
    config = vision_config(
        broker,
        tmp_path,
        """
homeassistant: {enabled: true}
cameras:
  gym:
    source: {type: mqtt, topic: cams/gym/frame}
    reps: {enabled: true}
    fall: {enabled: true}
""",
    )
    node = f"{config.id}_cameras"
    stale = f"homeassistant/sensor/{node}/attic_person_count/config"
    with RequestClient(
        broker.host, broker.port, config.id, extra_subscriptions=["homeassistant/#"]
    ) as ha:
        ha.publish_raw(stale, b'{"name": "attic"}', retain=True)
        time.sleep(0.3)
        with run_agent(config):
            time.sleep(1.0)
            announced = {t: p for t, p in _configs(ha) if p and t != stale and node in t}
            assert set(announced) == {
                f"homeassistant/binary_sensor/{node}/gym_occupancy/config",
                f"homeassistant/sensor/{node}/gym_person_count/config",
                f"homeassistant/sensor/{node}/gym_reps/config",
                f"homeassistant/event/{node}/gym_events/config",
            }
            bodies = {t.split("/")[-2]: json.loads(p) for t, p in announced.items()}
            root = f"edge-agent/{config.id}"
            occupancy = bodies["gym_occupancy"]
            assert occupancy["device_class"] == "occupancy"
            assert occupancy["state_topic"] == f"{root}/camera/gym/person"
            assert occupancy["availability"][0]["topic"] == f"{root}/status"
            assert bodies["gym_events"]["event_types"] == [
                "person_enter",
                "person_leave",
                "rep",
                "fall",
                "recovered",
            ]
            assert bodies["gym_reps"]["state_topic"] == f"{root}/camera/gym/reps"
            assert len({b["unique_id"] for b in bodies.values()}) == 4
            assert (stale, b"") in _configs(ha)  # the removed camera's entity is cleared

            before = len(_configs(ha))
            ha.publish_raw("homeassistant/status", b"online")
            time.sleep(1.0)
            again = [t for t, _ in _configs(ha)[before:] if node in t]
            assert sorted(again) == sorted(announced)  # announced again
