"""Home Assistant MQTT discovery payloads (device-based discovery, one config per device).

Follows https://www.home-assistant.io/integrations/mqtt/ ("Device discovery payload",
abbreviations, availability, origin) and the MQTT sensor and binary_sensor pages:
- topic `<prefix>/device/<node id>/config`, retained;
- `dev` (identifiers, name, model, via_device) and `o` (origin: name, sw) at the root;
- shared availability at the root: the agent's status (mapped so `stopped` is offline) and,
  for a sensor device, its own availability, with `avty_mode: all`;
- under `cmps`, one component per device x task: a sensor whose state is the label
  (`dev_cla: enum`, `ops` the labels) with score, source and latency as attributes; a
  binary_sensor where a task is a yes/no question; diagnostic sensors for the agent's stats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.devices.bindings import Binding
from agent.devices.config import DeviceConfig
from agent.devices.profiles import Profile
from agent.mqtt.topics import Topics

ORIGIN = "edge-agent"
AGENT_AVAILABILITY_TPL = "{{ 'online' if value == 'online' else 'offline' }}"
LABEL_TPL = "{{ value_json.result.label }}"
ATTRIBUTES_TPL = (
    "{{ {'score': value_json.result.score, 'source': value_json.source, "
    "'latency_ms': value_json.latency_ms, 'degraded': value_json.degraded, "
    "'model': value_json.model, 'top': value_json.result.top, "
    "'window_end': value_json.ts} | tojson }}"
)
# (key, name, stats field, icon, state_class, device_class, unit)
_STATS: tuple[tuple[str, str, str, str, str | None, str | None, str | None], ...] = (
    (
        "messages_in",
        "Messages in",
        "messages_in",
        "mdi:message-arrow-left",
        "total_increasing",
        None,
        None,
    ),
    (
        "messages_out",
        "Messages out",
        "messages_out",
        "mdi:message-arrow-right",
        "total_increasing",
        None,
        None,
    ),
    ("errors", "Errors", "errors", "mdi:alert-circle-outline", "total_increasing", None, None),
    ("queue_depth", "Queue depth", "queue_depth", "mdi:tray-full", "measurement", None, None),
    ("inflight", "In flight", "inflight", "mdi:progress-clock", "measurement", None, None),
    ("uptime", "Uptime", "uptime_s", "mdi:timer-outline", None, "duration", "s"),
)


@dataclass(frozen=True)
class NodeConfig:
    """One retained discovery message."""

    node: str
    topic: str
    payload: dict[str, Any]

    @property
    def platforms(self) -> dict[str, str]:
        return {cid: c["p"] for cid, c in self.payload["cmps"].items()}

    @property
    def state_topics(self) -> set[str]:
        return {c["stat_t"] for c in self.payload["cmps"].values() if "stat_t" in c}


def agent_node_id(agent_id: str) -> str:
    """The agent's device in Home Assistant; the cameras' entities (agent/vision/
    homeassistant.py) name the same identifier, so they all land on one device."""
    return f"edge_agent_{agent_id}"


def device_node_id(agent_id: str, device_id: str) -> str:
    return f"edge_agent_{agent_id}_{device_id}"


def config_topic(prefix: str, node: str) -> str:
    return f"{prefix}/device/{node}/config"


def _origin() -> dict[str, str]:
    return {"name": ORIGIN, "sw": __version__}


def agent_node(prefix: str, topics: Topics, qos: int) -> NodeConfig:
    node = agent_node_id(topics.agent_id)
    components: dict[str, dict[str, Any]] = {}
    for key, name, field, icon, state_class, device_class, unit in _STATS:
        component: dict[str, Any] = {
            "p": "sensor",
            "name": name,
            "uniq_id": f"{node}_{key}",
            "stat_t": topics.stats,
            "val_tpl": f"{{{{ value_json.{field} }}}}",
            "ent_cat": "diagnostic",
            "ic": icon,
        }
        if state_class:
            component["stat_cla"] = state_class
        if device_class:
            component["dev_cla"] = device_class
        if unit:
            component["unit_of_meas"] = unit
        components[key] = component
    payload = {
        "dev": {
            "ids": [node],
            "name": f"edge-agent {topics.agent_id}",
            "mf": "edge-agent",
            "mdl": "edge-agent",
            "sw": __version__,
        },
        "o": _origin(),
        "avty": [{"t": topics.status, "val_tpl": AGENT_AVAILABILITY_TPL}],
        "qos": qos,
        "cmps": components,
    }
    return NodeConfig(node, config_topic(prefix, node), payload)


def device_node(
    prefix: str,
    topics: Topics,
    qos: int,
    device: DeviceConfig,
    profile: Profile,
    tasks: Sequence[tuple[Binding, Sequence[str]]],
) -> NodeConfig:
    """The config of one device: `tasks` are (binding, labels) of the tasks it runs."""
    node = device_node_id(topics.agent_id, device.id)
    components: dict[str, dict[str, Any]] = {}
    for binding, labels in tasks:
        state = topics.device_result(device.id, binding.task)
        sensor: dict[str, Any] = {
            "p": "sensor",
            "name": binding.title,
            "uniq_id": f"{node}_{binding.task}",
            "stat_t": state,
            "val_tpl": LABEL_TPL,
            "json_attr_t": state,
            "json_attr_tpl": ATTRIBUTES_TPL,
            "ic": binding.icon,
        }
        if labels:
            sensor["dev_cla"] = "enum"
            sensor["ops"] = list(labels)
        components[binding.task] = sensor
        if binding.binary is not None:
            on = sorted(binding.binary.on_labels)
            binary: dict[str, Any] = {
                "p": "binary_sensor",
                "name": binding.binary.name,
                "uniq_id": f"{node}_{binding.task}_{binding.binary.key}",
                "stat_t": state,
                "val_tpl": f"{{{{ 'ON' if value_json.result.label in {on} else 'OFF' }}}}",
            }
            if binding.binary.device_class:
                binary["dev_cla"] = binding.binary.device_class
            components[f"{binding.task}_{binding.binary.key}"] = binary
    dev: dict[str, Any] = {
        "ids": [node],
        "name": device.display_name,
        "mdl": profile.model,
        "via_device": agent_node_id(topics.agent_id),
    }
    if device.area:
        dev["sa"] = device.area
    payload = {
        "dev": dev,
        "o": _origin(),
        "avty": [
            {"t": topics.status, "val_tpl": AGENT_AVAILABILITY_TPL},
            {"t": topics.device_availability(device.id)},
        ],
        "avty_mode": "all",
        "qos": qos,
        "cmps": components,
    }
    return NodeConfig(node, config_topic(prefix, node), payload)
