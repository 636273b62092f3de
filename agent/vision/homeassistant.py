"""Home Assistant MQTT discovery for the cameras: an occupancy binary_sensor and a person
count sensor per camera, a reps sensor when counting reps, and an `event` entity carrying
person_enter / person_leave / rep / fall.

As Zigbee2MQTT does: configs are retained; when Home Assistant announces itself
(`<prefix>/status` = `online`) they are published again; configs under our node id that no
longer match a configured entity (a camera removed from the config) are cleared.
"""

from __future__ import annotations

from typing import Any

from agent import __version__
from agent.mqtt.topics import Topics
from agent.vision.config import CameraConfig


def node_id(agent_id: str) -> str:
    """Our node id in discovery topics: camera entities only (so clean-up never touches
    entities another part of the agent may announce)."""
    return f"{agent_id}_cameras"


def discovery(
    prefix: str, topics: Topics, agent_id: str, cameras: dict[str, CameraConfig]
) -> dict[str, dict[str, Any]]:
    """Discovery topic -> config payload, for every camera entity."""
    device = {
        "identifiers": [f"edge_agent_{agent_id}"],
        "name": f"edge-agent {agent_id}",
        "manufacturer": "edge-agent",
        "sw_version": __version__,
    }
    availability = [
        {
            "topic": topics.status,
            "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
        }
    ]
    node = node_id(agent_id)
    configs: dict[str, dict[str, Any]] = {}

    def add(component: str, object_id: str, body: dict[str, Any]) -> None:
        unique = f"edge_agent_{agent_id}_{object_id}"
        body.update({"unique_id": unique, "device": device, "availability": availability})
        configs[f"{prefix}/{component}/{node}/{object_id}/config"] = body

    for name, camera in cameras.items():
        person = topics.camera(name, "person")
        add(
            "binary_sensor",
            f"{name}_occupancy",
            {
                "name": f"{name} occupancy",
                "device_class": "occupancy",
                "state_topic": person,
                "value_template": "{{ 'ON' if value | int(0) > 0 else 'OFF' }}",
            },
        )
        add(
            "sensor",
            f"{name}_person_count",
            {
                "name": f"{name} person count",
                "state_topic": person,
                "state_class": "measurement",
                "icon": "mdi:account-multiple",
            },
        )
        event_types = ["person_enter", "person_leave"]
        if camera.reps.enabled:
            event_types.append("rep")
            add(
                "sensor",
                f"{name}_reps",
                {
                    "name": f"{name} reps",
                    "state_topic": topics.camera(name, "reps"),
                    "state_class": "total_increasing",
                    "icon": "mdi:weight-lifter",
                },
            )
        if camera.fall.enabled:
            event_types += ["fall", "recovered"]
        add(
            "event",
            f"{name}_events",
            {
                "name": f"{name} events",
                "state_topic": topics.camera(name, "event"),
                "event_types": event_types,
            },
        )
    return configs


def discovery_filter(prefix: str, agent_id: str) -> str:
    """Subscription that brings back our retained configs (for the clean-up)."""
    return f"{prefix}/+/{node_id(agent_id)}/+/config"
