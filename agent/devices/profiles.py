"""Device profiles: data files (`devices/profiles/*.yaml`) that say how a kind of device
publishes: topic pattern, payload format, which fields carry which channel, units,
timestamps and how often it reports. Loaded and checked strictly; the parser
(`agent/devices/parse.py`) is driven by them."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.errors import ConfigError

_CHANNEL = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """Where one channel (or, for `samples`, a group of channels) is read."""

    path: str | None = Field(None, description="json: dotted path of the value in the payload.")
    names: list[str] = Field(
        default_factory=list,
        description="number: sensor names (the topic level named by `sensor_level`).",
    )
    type: Literal["number", "bool", "image", "samples"] = "number"
    unit: str | None = None
    scale: float = Field(1.0, description="Multiplied into the value (unit conversion).")
    columns: list[str] = Field(
        default_factory=list, description="samples: the channel of each column, in order."
    )
    description: str = ""

    @model_validator(mode="after")
    def _shape(self) -> FieldSpec:
        if self.type == "samples" and not self.columns:
            raise ValueError("a samples field needs `columns`")
        if self.type != "samples" and self.columns:
            raise ValueError("only a samples field has `columns`")
        for column in self.columns:
            if not _CHANNEL.match(column):
                raise ValueError(f"column {column!r} is not a channel name")
        return self


class TimestampSpec(_Strict):
    path: str = Field(description="Dotted path of the device's timestamp.")
    format: Literal["epoch_s", "epoch_ms", "iso8601", "auto"] = Field(
        description="`auto`: a string is ISO 8601, a number epoch seconds (milliseconds when "
        "over 1e11). ISO 8601 without an offset is the agent's local time."
    )


class Example(_Strict):
    topic: str
    payload: Any = Field(description="A JSON object, or the text of a plain payload.")
    source: str = Field(description="Where this example comes from.")


class Profile(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    title: str
    description: str
    topic: str = Field(description="Topic pattern; {name} is the device name.")
    format: Literal["json", "number"]
    sensor_level: int | None = Field(
        None, ge=0, description="number: the topic level (0-based) that names the sensor."
    )
    fields: dict[str, FieldSpec]
    timestamp: TimestampSpec | None = None
    rate_path: str | None = Field(
        None, description="samples: path of the sample rate (Hz) of a batch."
    )
    reporting: str = Field(description="How often the device publishes, how to set it.")
    unavailable_after_s: float = Field(gt=0)
    model: str = Field(description="The model shown for the device in Home Assistant.")
    references: list[str] = Field(min_length=1)
    examples: list[Example] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        for channel, spec in self.fields.items():
            if not _CHANNEL.match(channel):
                raise ValueError(f"field {channel!r} is not a channel name (a-z, 0-9, _)")
            if self.format == "json" and spec.path is None:
                raise ValueError(f"field {channel}: a json profile reads values at a `path`")
            if self.format == "number" and (not spec.names or spec.type != "number"):
                raise ValueError(f"field {channel}: a number profile maps sensor `names`")
        if self.format == "number" and self.sensor_level is None:
            raise ValueError("a number profile needs `sensor_level`")
        if "{name}" not in self.topic:
            raise ValueError("topic must contain {name}")
        samples = [s for s in self.fields.values() if s.type == "samples"]
        if samples and self.rate_path is None:
            raise ValueError("a profile with samples needs `rate_path`")
        return self

    @property
    def channels(self) -> frozenset[str]:
        """Every channel a reading of this profile can carry."""
        out: set[str] = set()
        for channel, spec in self.fields.items():
            out.update(spec.columns if spec.type == "samples" else [channel])
        return frozenset(out)

    def default_topic(self, device_id: str) -> str:
        return self.topic.replace("{name}", device_id)


def default_profiles_dir() -> Path:
    """`devices/profiles` of the source tree, else beside the virtualenv (an install in
    /opt/edge-agent/venv looks in /opt/edge-agent/devices/profiles)."""
    candidates = [
        Path(__file__).resolve().parents[2] / "devices" / "profiles",
        Path(sys.prefix).parent / "devices" / "profiles",
    ]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def load_profiles(directory: Path) -> dict[str, Profile]:
    """Every `*.yaml` profile of `directory`, by name. Raises ConfigError listing problems."""
    if not directory.is_dir():
        raise ConfigError([f"device_profiles: no such directory {directory}"])
    profiles: dict[str, Profile] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            profile = Profile.model_validate(raw)
        except (OSError, yaml.YAMLError) as exc:
            problems.append(f"{path}: cannot read: {exc}")
            continue
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "(top level)"
                problems.append(f"{path}: {where}: {err['msg']}")
            continue
        if profile.name != path.stem:
            problems.append(f"{path}: name {profile.name!r} differs from the file name")
        elif profile.name in profiles:
            problems.append(f"{path}: duplicate profile {profile.name}")
        else:
            profiles[profile.name] = profile
    if problems:
        raise ConfigError(problems)
    return profiles
