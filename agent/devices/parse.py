"""Device payloads -> readings, driven by a profile. Every payload is hostile: anything that
is not what the profile describes raises InputError with a wire code, and nothing of a
rejected message is kept (a message is taken whole or not at all)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.devices.profiles import FieldSpec, Profile, TimestampSpec
from agent.errors import InputError
from agent.wire import loads

# Timestamps outside [2000-01-01, 2100-01-01) are garbage, not a clock.
TS_MIN, TS_MAX = 946_684_800.0, 4_102_444_800.0
MAX_SAMPLES = 10_000
_MISSING = object()


@dataclass(frozen=True)
class Reading:
    """One sample of a device: its own timestamp (None when the payload has none) and the
    channel values it carries (a subset of the profile's channels)."""

    ts: float | None
    values: dict[str, float] = field(default_factory=dict)
    image: str | None = None  # base64 PNG/JPEG (the `image` channel)


def _get(obj: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _number(value: Any, where: str, scale: float) -> float:
    if type(value) not in (int, float):
        raise InputError(
            "invalid_field", f"{where}: expected a number, found {type(value).__name__}"
        )
    number = float(value) * scale
    if not math.isfinite(number):
        raise InputError("not_finite", f"{where}: not a finite number")
    return number


def parse_timestamp(value: Any, spec: TimestampSpec) -> float:
    """Epoch seconds of a device timestamp. Raises InputError(`bad_timestamp`)."""
    where = spec.path
    fmt = spec.format
    if fmt == "auto":
        fmt = "iso8601" if isinstance(value, str) else "epoch_s"
    if fmt == "iso8601":
        if not isinstance(value, str) or len(value) > 64:
            raise InputError("bad_timestamp", f"{where}: expected an ISO 8601 string")
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InputError("bad_timestamp", f"{where}: not an ISO 8601 time") from None
        # A time without an offset (Tasmota's `Time`) is the local time of the agent.
        ts = (moment if moment.tzinfo else moment.astimezone()).timestamp()
    else:
        if type(value) not in (int, float):
            raise InputError("bad_timestamp", f"{where}: expected a number")
        ts = float(value)
        if fmt == "epoch_ms" or (spec.format == "auto" and ts > 1e11):
            ts /= 1000.0
    if not (math.isfinite(ts) and TS_MIN <= ts < TS_MAX):
        raise InputError("bad_timestamp", f"{where}: {value!r} is not a plausible time")
    return ts


class Parser:
    """Parses one device's messages with its profile and per-device field overrides."""

    def __init__(
        self, profile: Profile, overrides: Mapping[str, str], max_payload_bytes: int
    ) -> None:
        self.profile = profile
        self._max_bytes = max_payload_bytes
        fields = dict(profile.fields)
        for channel, source in overrides.items():
            base = fields.get(channel, FieldSpec())  # type: ignore[call-arg]
            if profile.format == "json":
                fields[channel] = base.model_copy(update={"path": source})
            else:
                fields[channel] = base.model_copy(update={"names": [source]})
        self._fields = fields
        self._by_name = {name: channel for channel, spec in fields.items() for name in spec.names}

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def parse(self, topic: str, payload: bytes) -> list[Reading]:
        if len(payload) > self._max_bytes:
            raise InputError(
                "payload_too_large", f"payload is {len(payload)} bytes; limit {self._max_bytes}"
            )
        if self.profile.format == "number":
            return self._parse_number(topic, payload)
        return self._parse_json(payload)

    # ------------------------------------------------------------------ plain numbers

    def _parse_number(self, topic: str, payload: bytes) -> list[Reading]:
        level = self.profile.sensor_level
        levels = topic.split("/")
        if level is None or level >= len(levels):
            raise InputError("invalid_topic", "topic has no sensor level")
        channel = self._by_name.get(levels[level])
        if channel is None:
            return []  # a sensor of the node that no channel uses (wifi signal, uptime, ...)
        try:
            text = payload.decode("ascii").strip()
            number = float(text)
        except (UnicodeDecodeError, ValueError):
            raise InputError(
                "invalid_field", f"{levels[level]}: expected a plain number, found {payload[:32]!r}"
            ) from None
        if not math.isfinite(number):
            raise InputError("not_finite", f"{levels[level]}: the sensor reports {text!r}")
        return [Reading(None, {channel: number * self._fields[channel].scale})]

    # ------------------------------------------------------------------ JSON objects

    def _parse_json(self, payload: bytes) -> list[Reading]:
        obj = loads(payload)
        if not isinstance(obj, dict):
            raise InputError("invalid_payload", "expected a JSON object")
        values: dict[str, float] = {}
        image: str | None = None
        batches: list[tuple[FieldSpec, list[list[float]]]] = []
        for channel, spec in self._fields.items():
            assert spec.path is not None
            raw = _get(obj, spec.path)
            if raw is _MISSING or raw is None:
                continue
            if spec.type == "number":
                values[channel] = _number(raw, spec.path, spec.scale)
            elif spec.type == "bool":
                if not isinstance(raw, bool):
                    raise InputError(
                        "invalid_field",
                        f"{spec.path}: expected true or false, found {type(raw).__name__}",
                    )
                values[channel] = 1.0 if raw else 0.0
            elif spec.type == "image":
                if not isinstance(raw, str) or not raw:
                    raise InputError("invalid_field", f"{spec.path}: expected a base64 string")
                image = raw
            else:
                batches.append((spec, self._samples(raw, spec)))
        if not values and image is None and not batches:
            paths = sorted(s.path for s in self._fields.values() if s.path)
            raise InputError("no_known_fields", f"none of the fields {paths} is in the payload")
        ts = None
        if self.profile.timestamp is not None:
            raw_ts = _get(obj, self.profile.timestamp.path)
            if raw_ts is not _MISSING and raw_ts is not None:
                ts = parse_timestamp(raw_ts, self.profile.timestamp)
        if not batches:
            return [Reading(ts, values, image)]
        return self._expand(obj, ts, values, image, batches)

    def _samples(self, raw: Any, spec: FieldSpec) -> list[list[float]]:
        where, width = spec.path, len(spec.columns)
        if not isinstance(raw, list) or not raw:
            raise InputError("invalid_field", f"{where}: expected a non-empty list of samples")
        if len(raw) > MAX_SAMPLES:
            raise InputError("input_too_large", f"{where}: more than {MAX_SAMPLES} samples")
        rows: list[list[float]] = []
        for i, row in enumerate(raw):
            if not isinstance(row, list) or len(row) != width:
                raise InputError("invalid_field", f"{where}[{i}]: expected {width} numbers")
            rows.append([_number(v, f"{where}[{i}]", spec.scale) for v in row])
        return rows

    def _expand(
        self,
        obj: Any,
        ts: float | None,
        values: dict[str, float],
        image: str | None,
        batches: list[tuple[FieldSpec, list[list[float]]]],
    ) -> list[Reading]:
        count = len(batches[0][1])
        if any(len(rows) != count for _, rows in batches):
            raise InputError("invalid_field", "sample lists differ in length")
        assert self.profile.rate_path is not None
        rate = _get(obj, self.profile.rate_path)
        if type(rate) not in (int, float) or not 0 < float(rate) <= 10_000:
            raise InputError(
                "invalid_field", f"{self.profile.rate_path}: expected a rate in Hz (0, 10000]"
            )
        step = 1.0 / float(rate)
        readings: list[Reading] = []
        for i in range(count):
            row = dict(values)
            for spec, rows in batches:
                row.update(zip(spec.columns, rows[i], strict=True))
            readings.append(Reading(None if ts is None else ts + i * step, row, image))
        return readings
