"""Readings -> payloads in a profile's real format: the inverse of `parse.py`, for the
simulator and tests. A JSON payload starts from the profile's real example (so it keeps
the fields a real device sends alongside) and gets the readings and the timestamp written
at the profile's paths."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from agent.devices.config import DeviceConfig
from agent.devices.profiles import Profile, TimestampSpec
from agent.wire import dumps

# A reading to render: channel -> number, `image` -> base64 text, a samples field's name
# (e.g. `accel`) -> list of rows, and `rate_hz` for a batch.
Values = Mapping[str, Any]


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        child = obj.get(key)
        if not isinstance(child, dict):
            child = obj[key] = {}
        obj = child
    obj[keys[-1]] = value


def _timestamp(ts: float, spec: TimestampSpec) -> Any:
    if spec.format == "epoch_s":
        return round(ts, 3)
    if spec.format == "epoch_ms":
        return round(ts * 1000)
    if spec.format == "iso8601":  # the device's local time, no offset (Tasmota's `Time`)
        return datetime.fromtimestamp(ts).strftime("%Y-%m-%dT%H:%M:%S")
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)  # `auto`: as Zigbee2MQTT's ISO_8601
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Renderer:
    def __init__(self, device: DeviceConfig, profile: Profile) -> None:
        self.device = device
        self.profile = profile
        self.topic = device.topic or profile.default_topic(device.id)
        self._paths = {c: s.path for c, s in profile.fields.items() if s.path}
        self._names = {c: s.names[0] for c, s in profile.fields.items() if s.names}
        for channel, source in device.fields.items():
            (self._paths if profile.format == "json" else self._names)[channel] = source

    def render(self, ts: float, values: Values) -> list[tuple[str, bytes]]:
        """(topic, payload) messages carrying `values` taken at `ts` (epoch seconds)."""
        if self.profile.format == "number":
            return self._numbers(values)
        return [(self.topic, dumps(self._json(ts, values)))]

    def _numbers(self, values: Values) -> list[tuple[str, bytes]]:
        level = self.profile.sensor_level
        assert level is not None
        out = []
        for channel, value in values.items():
            name = self._names.get(channel)
            if name is None:
                continue
            levels = self.topic.split("/")
            levels[level] = name
            out.append(("/".join(levels), f"{float(value):.2f}".encode()))
        return out

    def _json(self, ts: float, values: Values) -> dict[str, Any]:
        wanted = {self._paths[c].split(".")[0] for c in values if c in self._paths}
        examples = [e.payload for e in self.profile.examples if isinstance(e.payload, dict)]
        base = max(examples, key=lambda p: len(wanted & set(p)), default={})
        payload: dict[str, Any] = copy.deepcopy(base)
        for channel, value in values.items():
            if channel == "rate_hz" and self.profile.rate_path:
                _set(payload, self.profile.rate_path, value)
            elif channel in self._paths:
                _set(payload, self._paths[channel], value)
        if self.profile.timestamp is not None:
            _set(payload, self.profile.timestamp.path, _timestamp(ts, self.profile.timestamp))
        return payload
