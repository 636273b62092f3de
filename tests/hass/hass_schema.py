"""A schema of Home Assistant MQTT discovery messages, written field by field from Home
Assistant's documentation (not from our own code). Sources, home-assistant/home-assistant.io:

- source/_integrations/mqtt.markdown at 0a314403e71f72c2fa6fdcb51b28d4876b4ab7c2
  (https://www.home-assistant.io/integrations/mqtt/): "Discovery topic", "Device discovery
  payload", "Discovery payload", "Supported abbreviations in MQTT discovery messages",
  "Supported abbreviations for device registry configuration", "Supported abbreviations for
  origin info", "Using Availability topics";
- source/_integrations/sensor.mqtt.markdown at 9e4a69ab998700a518e366a7f54551a150fccf94
  (https://www.home-assistant.io/integrations/sensor.mqtt/);
- source/_integrations/binary_sensor.mqtt.markdown at fbc3a3b3bdcce503437401c8ea500a3f72181fd8
  (https://www.home-assistant.io/integrations/binary_sensor.mqtt/).
"""

from __future__ import annotations

import re
from typing import Any

# "Discovery topic": <discovery_prefix>/<component>/[<node_id>/]<object_id>/config, ids of
# the character class [a-zA-Z0-9_-]; `device` as the component for device discovery.
ID = re.compile(r"^[a-zA-Z0-9_-]+$")

# "Supported abbreviations in MQTT discovery messages" (the entries these platforms use).
ABBREVIATIONS = {
    "avty": "availability",
    "avty_mode": "availability_mode",
    "avty_t": "availability_topic",
    "avty_tpl": "availability_template",
    "cmd_t": "command_topic",
    "cmps": "components",
    "dev": "device",
    "dev_cla": "device_class",
    "dsp_prc": "display_precision",
    "e": "encoding",
    "en": "enabled_by_default",
    "ent_cat": "entity_category",
    "ent_pic": "entity_picture",
    "exp_aft": "expire_after",
    "frc_upd": "force_update",
    "ic": "icon",
    "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template",
    "lrst_val_tpl": "last_reset_value_template",
    "name": "name",
    "o": "origin",
    "obj_id": "object_id",
    "off_dly": "off_delay",
    "ops": "options",
    "p": "platform",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off",
    "pl_on": "payload_on",
    "stat_cla": "state_class",
    "stat_t": "state_topic",
    "sug_dsp_prc": "suggested_display_precision",
    "t": "topic",
    "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template",
}
# "Supported abbreviations for device registry configuration" (+ via_device, unabbreviated).
DEVICE_ABBREVIATIONS = {
    "cu": "configuration_url",
    "cns": "connections",
    "ids": "identifiers",
    "name": "name",
    "mf": "manufacturer",
    "mdl": "model",
    "mdl_id": "model_id",
    "hw": "hw_version",
    "sw": "sw_version",
    "sa": "suggested_area",
    "sn": "serial_number",
}
DEVICE_KEYS = set(DEVICE_ABBREVIATIONS.values()) | {"via_device"}
# "Supported abbreviations for origin info"; `name` is required.
ORIGIN_ABBREVIATIONS = {"name": "name", "sw": "sw_version", "url": "support_url"}

# "Using Availability topics" / `availability` list entries.
AVAILABILITY_ENTRY = {"topic", "payload_available", "payload_not_available", "value_template"}
AVAILABILITY_MODES = {"all", "any", "latest"}

# Device discovery payload: shared options at the root.
ROOT_SHARED = {
    "device",
    "origin",
    "components",
    "availability",
    "availability_mode",
    "availability_topic",
    "availability_template",
    "payload_available",
    "payload_not_available",
    "command_topic",
    "state_topic",
    "qos",
    "encoding",
    "~",
}

_COMMON = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "expire_after",
    "force_update",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "object_id",
    "payload_available",
    "payload_not_available",
    "platform",
    "qos",
    "state_topic",
    "unique_id",
    "value_template",
}
# The configuration variables of the MQTT sensor and binary sensor pages.
PLATFORM_KEYS = {
    "sensor": _COMMON
    | {
        "last_reset_value_template",
        "options",
        "suggested_display_precision",
        "state_class",
        "unit_of_measurement",
    },
    "binary_sensor": _COMMON | {"off_delay", "payload_off", "payload_on"},
}
# https://developers.home-assistant.io/docs/core/entity/sensor#available-state-classes
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}


def _full(obj: dict[str, Any], table: dict[str, str], where: str) -> dict[str, Any]:
    """Expand abbreviations; a key must be a documented name or abbreviation, once."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = table.get(key, key)
        assert name not in out, f"{where}: {name} given twice"
        out[name] = value
    return out


def _topic(value: Any, where: str) -> None:
    assert isinstance(value, str) and value, f"{where}: a topic is a non-empty string"
    assert not any(c in value for c in "+#\x00"), f"{where}: {value!r} is not a publish topic"


def check_config(topic: str, payload: dict[str, Any], prefix: str) -> list[str]:
    """Validate one device-based discovery message. Returns the unique ids it defines."""
    levels = topic.split("/")
    assert topic.startswith(prefix + "/device/") and topic.endswith("/config"), topic
    assert len(levels) == len(prefix.split("/")) + 3 and ID.match(levels[-2]), topic
    root = _full(payload, ABBREVIATIONS, topic)
    unknown = set(root) - ROOT_SHARED
    assert not unknown, f"{topic}: not shared options of a device discovery payload: {unknown}"
    # "The shared options at the root level of the JSON message must include: device, origin"
    assert isinstance(root.get("device"), dict), f"{topic}: device mapping is required"
    assert isinstance(root.get("origin"), dict), f"{topic}: origin mapping is required"
    device = _full(root["device"], DEVICE_ABBREVIATIONS, f"{topic} device")
    assert set(device) <= DEVICE_KEYS, f"{topic}: unknown device keys {set(device) - DEVICE_KEYS}"
    ids = device.get("identifiers")
    assert ids or device.get("connections"), f"{topic}: identifiers or connections required"
    if ids is not None:
        assert isinstance(ids, str | list) and all(
            isinstance(i, str) for i in (ids if isinstance(ids, list) else [ids])
        )
    origin = _full(root["origin"], ORIGIN_ABBREVIATIONS, f"{topic} origin")
    assert set(origin) <= set(ORIGIN_ABBREVIATIONS.values()), f"{topic}: origin keys {origin}"
    assert isinstance(origin.get("name"), str) and origin["name"], f"{topic}: origin name required"
    _availability(root, topic)
    if "qos" in root:
        assert root["qos"] in (0, 1, 2)
    components = root.get("components")
    assert isinstance(components, dict) and components, f"{topic}: components required"
    unique_ids = []
    for cid, raw in components.items():
        assert ID.match(cid), f"{topic}: component id {cid!r}"
        where = f"{topic} component {cid}"
        component = _full(raw, ABBREVIATIONS, where)
        platform = component.get("platform")
        assert platform in PLATFORM_KEYS, (
            f"{where}: platform (p) required, one of {set(PLATFORM_KEYS)}"
        )
        unknown = set(component) - PLATFORM_KEYS[platform]
        assert not unknown, f"{where}: not {platform} options: {unknown}"
        # "Required when used with device-based discovery."
        assert isinstance(component.get("unique_id"), str), f"{where}: unique_id required"
        unique_ids.append(component["unique_id"])
        # state_topic is required for both platforms (or shared at the root).
        _topic(component.get("state_topic", root.get("state_topic")), f"{where} state_topic")
        if "json_attributes_topic" in component:
            _topic(component["json_attributes_topic"], f"{where} json_attributes_topic")
        _availability(component, where)
        category = component.get("entity_category")
        if category is not None:
            assert category == "diagnostic" or platform != "sensor", (
                f"{where}: the entity category must be diagnostic for sensors"
            )
        if platform == "sensor":
            _sensor(component, where)
        if "qos" in component:
            assert component["qos"] in (0, 1, 2)
    return unique_ids


def _availability(obj: dict[str, Any], where: str) -> None:
    entries = obj.get("availability")
    if entries is None:
        if "availability_topic" in obj:
            _topic(obj["availability_topic"], f"{where} availability_topic")
        return
    # "Must not be used together with availability_topic."
    assert "availability_topic" not in obj, f"{where}: availability and availability_topic"
    assert isinstance(entries, list) and entries, f"{where}: availability is a list"
    for raw in entries:
        entry = _full(raw, ABBREVIATIONS, f"{where} availability")
        assert set(entry) <= AVAILABILITY_ENTRY, f"{where}: availability keys {set(entry)}"
        _topic(entry.get("topic"), f"{where} availability topic")  # required
    mode = obj.get("availability_mode", "latest")
    assert mode in AVAILABILITY_MODES, f"{where}: availability_mode {mode!r}"


def _sensor(component: dict[str, Any], where: str) -> None:
    options = component.get("options")
    if options is not None:
        # "The sensor's device_class must be set to enum. The options option cannot be used
        # together with state_class or unit_of_measurement." An empty list is not allowed.
        assert isinstance(options, list) and options, f"{where}: options is a non-empty list"
        assert component.get("device_class") == "enum", f"{where}: options need device_class enum"
        assert "state_class" not in component and "unit_of_measurement" not in component
    state_class = component.get("state_class")
    assert state_class is None or state_class in STATE_CLASSES, f"{where}: state_class"
