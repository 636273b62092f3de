"""The cameras of the agent: builds a pipeline per configured camera, routes the MQTT
messages that concern them (frames, Home Assistant's status, our retained discovery
configs), announces the entities, and reports per-camera stats.

`on_message` runs on the MQTT network thread: it only hands frames to a camera's slot or
publishes small retained messages; every model runs on the cameras' own threads.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from agent.cloud.client import CloudClient
from agent.config import Config, TaskConfig
from agent.engine import TaskRuntime
from agent.mqtt.client import Message
from agent.mqtt.topics import Topics
from agent.registry import Registry
from agent.vision import homeassistant
from agent.vision.camera import CameraPipeline, FramePublisher
from agent.vision.config import CameraConfig
from agent.vision.sources import MqttSource
from agent.wire import dumps

log = logging.getLogger(__name__)


def camera_tasks(camera: CameraConfig) -> list[str]:
    """The tasks whose models a camera runs: its `tasks`, plus `pose` for the events."""
    names: list[str] = list(dict.fromkeys(camera.tasks))
    needs_pose = camera.person.enabled or camera.reps.enabled or camera.fall.enabled
    if needs_pose and "pose" not in names and "person" not in names:
        names.append("pose")
    return names


def camera_runtimes(
    config: Config, registry: Registry, camera: CameraConfig
) -> dict[str, TaskRuntime]:
    """The task runtimes of one camera: each task's settings from `tasks.<name>` when
    present (model, threshold, cloud), the camera's privacy policy."""
    from agent.app import build_tasks  # the same checks as the request API's tasks

    wanted = {
        name: config.tasks.get(name) or TaskConfig()  # type: ignore[call-arg]
        for name in camera_tasks(camera)
    }
    wanted = {n: t.model_copy(update={"enabled": True, "local": True}) for n, t in wanted.items()}
    runtimes = build_tasks(config.model_copy(update={"tasks": wanted}), registry)
    return {n: dataclasses.replace(rt, privacy=camera.privacy) for n, rt in runtimes.items()}


class CameraService:
    def __init__(
        self,
        config: Config,
        topics: Topics,
        publisher: FramePublisher,
        cloud: CloudClient | None,
        registry: Registry,
    ) -> None:
        self.config = config
        self.topics = topics
        self._pub = publisher
        self.cameras: dict[str, CameraPipeline] = {}
        self._by_topic: dict[str, MqttSource] = {}
        for name, camera in config.cameras.items():
            pipeline = CameraPipeline(
                name,
                camera,
                camera_runtimes(config, registry, camera),
                publisher=publisher,
                topics=topics,
                cloud=cloud,
                num_threads=config.models.num_threads,
                person_threshold=config.vision.person_threshold,
                max_pixels=config.limits.max_image_pixels,
                max_frame_bytes=config.limits.max_payload_bytes,
            )
            self.cameras[name] = pipeline
            if isinstance(pipeline.source, MqttSource):
                self._by_topic[pipeline.source.topic] = pipeline.source
        ha = config.homeassistant  # shared with the devices' discovery (agent/hass/)
        self._ha_status = ha.status_topic if ha.enabled else None
        self._ha_node = homeassistant.node_id(config.id)
        self._ha_filter = homeassistant.discovery_filter(ha.discovery_prefix, config.id)
        self._discovery = (
            homeassistant.discovery(ha.discovery_prefix, topics, config.id, dict(config.cameras))
            if ha.enabled
            else {}
        )

    def subscriptions(self) -> list[tuple[str, int]]:
        """QoS 0: frames are perishable, and nothing here needs an acknowledgement."""
        subs = [(topic, 0) for topic in self._by_topic]
        if self._ha_status is not None:
            subs += [(self._ha_status, 0), (self._ha_filter, 0)]
        return subs

    def _our_config(self, topic: str) -> bool:
        levels = topic.split("/")
        return (
            self._ha_status is not None
            and len(levels) >= 4
            and levels[-1] == "config"
            and levels[-3] == self._ha_node
        )

    def offer(self, message: Message) -> bool:
        """On the network thread: take a frame or one of our discovery configs (True). Home
        Assistant's status is only observed (False): the devices' discovery needs it too."""
        source = self._by_topic.get(message.topic)
        if source is not None:
            source.offer(message.payload)
            return True
        if message.topic == self._ha_status:
            if message.payload.strip().lower() == b"online":
                log.info("Home Assistant is online: announcing the camera entities")
                self.announce()
            return False
        if not self._our_config(message.topic):
            return False
        if message.retain and message.payload and message.topic not in self._discovery:
            log.info("clearing stale Home Assistant entity %s", message.topic)
            self._pub.publish(message.topic, b"", qos=1, retain=True)
        return True

    def announce(self) -> None:
        for topic, body in self._discovery.items():
            self._pub.publish(topic, dumps(body), qos=1, retain=True)

    def on_connected(self) -> None:
        self.announce()

    def start(self) -> None:
        for pipeline in self.cameras.values():
            pipeline.start()

    def stop(self) -> None:
        for pipeline in self.cameras.values():
            pipeline.stop()

    def snapshot(self) -> dict[str, Any]:
        return {name: pipeline.snapshot() for name, pipeline in self.cameras.items()}
