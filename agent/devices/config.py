"""The `devices`, `device_profiles` and `homeassistant` sections of the configuration.

Kept apart from `agent/config.py` (which imports them into the tree) so the device options
live next to the code that uses them. Cross-checks that need the profiles on disk and the
served tasks are in `agent/devices/checks.py`, called by the top-level validator.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

DeviceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# Levels under `<base>/<id>/` that the agent already uses; a device of that id would collide.
RESERVED_IDS = frozenset(
    {"request", "response", "error", "status", "stats", "bridge", "events", "camera"}
)
_FILTER_LEVEL = re.compile(r"^(\+|[^+#/\x00]+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(_Strict):
    id: DeviceId = Field(
        description="Device id: a topic level (`<base>/<agent id>/<device>/<task>`) and part "
        "of the Home Assistant unique ids, so keep it stable."
    )
    name: str | None = Field(
        None, max_length=128, description="Name shown in Home Assistant; default the id."
    )
    profile: str = Field(description="How the device publishes: a file of device_profiles.")
    topic: str | None = Field(
        None,
        description="The topic the device publishes on; default the profile's pattern with "
        "{name} = the id. `+` stands for one level (ESPHome: one topic per sensor).",
    )
    tasks: list[str] = Field(
        min_length=1, description="Tasks to run on this device's readings (docs/devices.md)."
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Override where a channel is read: channel -> JSON path (json profiles) "
        "or sensor name (ESPHome).",
    )
    hop: int | None = Field(
        None,
        ge=1,
        description="Run again after this many new samples once the window is full; default "
        "the window length (windows do not overlap).",
    )
    max_gap_s: float | None = Field(
        None,
        gt=0,
        description="A longer silence between two readings restarts the windows; default "
        "the task's (5 sample periods).",
    )
    unavailable_after_s: float | None = Field(
        None,
        gt=0,
        description="Marked unavailable after this long without a valid message; default "
        "the profile's.",
    )
    area: str | None = Field(
        None, max_length=64, description="Suggested area in Home Assistant (e.g. `Room 12`)."
    )

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_IDS:
            raise ValueError(f"{value!r} is reserved (agent topics use it); pick another id")
        return value

    @field_validator("topic")
    @classmethod
    def _subscribable(cls, value: str | None) -> str | None:
        if value is None:
            return value
        levels = value.split("/")
        if value.startswith("$") or not all(_FILTER_LEVEL.match(level) for level in levels):
            raise ValueError(
                "must be a topic or a filter with `+` levels (no `#`, no empty level, "
                "not a $SYS topic)"
            )
        return value

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a task is listed twice")
        return value

    @property
    def display_name(self) -> str:
        return self.name or self.id


class HomeAssistantConfig(_Strict):
    enabled: bool = Field(True, description="Publish MQTT discovery configs for Home Assistant.")
    discovery_prefix: str = Field(
        "homeassistant",
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        description="Home Assistant's discovery prefix (its MQTT options).",
    )
    status_topic: str = Field(
        "homeassistant/status",
        pattern=r"^[A-Za-z0-9_.:-]+(/[A-Za-z0-9_.:-]+)*$",
        description="Home Assistant's birth topic: `online` there re-publishes every config.",
    )
    announce_jitter_s: float = Field(
        1.0,
        ge=0,
        le=4,
        description="Random delay before re-announcing after Home Assistant's birth message "
        "(Home Assistant recommends one, so many publishers do not answer at once).",
    )
