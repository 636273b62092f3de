"""Publishes the discovery configs, re-announces them, and removes stale ones.

Stale configs are found the way Zigbee2MQTT does it: subscribed to the discovery topics,
the broker hands over every retained config; one of ours (origin `edge-agent`, and this
agent's node or a device routed through it) whose node is no longer configured is cleared
with an empty retained message, and so are its retained result and availability topics. A
device that lost a task gets the config update Home Assistant documents for removing one
component (the component with only its platform), then its full config.
Runs on the device hub's thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from agent.hass.discovery import ORIGIN, NodeConfig, agent_node_id, config_topic
from agent.wire import dumps

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]  # retained, QoS 1


class Announcer:
    def __init__(self, publish: Publish, agent_id: str, root: str, protected: Iterable[str]):
        self._publish = publish
        self._agent_node = agent_node_id(agent_id)
        self._root = root
        self._protected = set(protected)
        self._prefix: str | None = None
        self._nodes: dict[str, NodeConfig] = {}
        self.announced = 0

    @property
    def nodes(self) -> dict[str, NodeConfig]:
        return dict(self._nodes)

    def update(self, prefix: str | None, nodes: Iterable[NodeConfig]) -> None:
        """Make `nodes` (under `prefix`; None: discovery off) the current set, removing what
        is no longer there. Call `announce` afterwards to publish them."""
        new = {n.node: n for n in nodes} if prefix is not None else {}
        for node, old in self._nodes.items():
            current = new.get(node)
            if current is None:
                self._remove(old, clear_state=prefix is not None)
            elif prefix != self._prefix:
                self._publish(old.topic, b"")
            else:
                self._drop_components(old.payload, current)
        self._prefix = prefix
        self._nodes = new

    def announce(self) -> int:
        for node in self._nodes.values():
            self._publish(node.topic, dumps(node.payload))
        self.announced += 1
        log.info("announced %d discovery config(s) to Home Assistant", len(self._nodes))
        return len(self._nodes)

    def on_retained(self, topic: str, payload: bytes) -> None:
        """A retained config from the broker (we subscribe to `<prefix>/device/+/config`)."""
        if self._prefix is None or not payload:
            return
        levels = topic.split("/")
        node = levels[-2] if len(levels) >= 2 else ""
        if topic != config_topic(self._prefix, node):
            return
        try:
            old = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not self._ours(node, old):
            return
        current = self._nodes.get(node)
        if current is None:
            log.info("removing stale Home Assistant config %s", topic)
            self._remove(NodeConfig(node, topic, old), clear_state=True)
        else:
            self._drop_components(old, current)

    # ------------------------------------------------------------------ helpers

    def _ours(self, node: str, payload: Any) -> bool:
        if not isinstance(payload, dict):
            return False
        origin = payload.get("o") or payload.get("origin")
        device = payload.get("dev") or payload.get("device")
        if not isinstance(origin, dict) or origin.get("name") != ORIGIN:
            return False
        return node == self._agent_node or (
            isinstance(device, dict) and device.get("via_device") == self._agent_node
        )

    def _remove(self, node: NodeConfig, clear_state: bool) -> None:
        self._publish(node.topic, b"")
        if clear_state:
            self._clear(_topics_of(node.payload))

    def _drop_components(self, old: Any, current: NodeConfig) -> None:
        old_cmps = old.get("cmps") if isinstance(old, dict) else None
        if not isinstance(old_cmps, dict):
            return
        gone = {
            cid: c.get("p")
            for cid, c in old_cmps.items()
            if cid not in current.payload["cmps"] and isinstance(c, dict) and c.get("p")
        }
        if not gone:
            return
        log.info("removing component(s) %s from %s", sorted(gone), current.topic)
        removal = dict(current.payload)
        removal["cmps"] = {**current.payload["cmps"], **{cid: {"p": p} for cid, p in gone.items()}}
        self._publish(current.topic, dumps(removal))
        self._publish(current.topic, dumps(current.payload))
        stale = {old_cmps[cid].get("stat_t") for cid in gone} - current.state_topics
        self._clear(t for t in stale if isinstance(t, str))

    def _clear(self, topics: Iterable[str]) -> None:
        for topic in topics:
            if topic.startswith(self._root + "/") and topic not in self._protected:
                self._publish(topic, b"")


def _topics_of(payload: Any) -> set[str]:
    """Result and availability topics named by a config."""
    found: set[str] = set()
    if not isinstance(payload, dict):
        return found
    for entry in payload.get("avty") or []:
        if isinstance(entry, dict) and isinstance(entry.get("t"), str):
            found.add(entry["t"])
    cmps = payload.get("cmps")
    if isinstance(cmps, dict):
        for c in cmps.values():
            if isinstance(c, dict) and isinstance(c.get("stat_t"), str):
                found.add(c["stat_t"])
    return found
