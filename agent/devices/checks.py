"""Cross-checks of the `devices` section against the profiles on disk and the served tasks
(run by the configuration's validator, so `check-config` reports them with the rest)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from agent.devices.bindings import BINDINGS
from agent.devices.config import DeviceConfig
from agent.devices.profiles import Profile, default_profiles_dir, load_profiles
from agent.devices.rules import RULES
from agent.devices.topicmatch import overlaps_tree
from agent.errors import ConfigError


def profiles_dir(configured: Path | None) -> Path:
    return configured if configured is not None else default_profiles_dir()


def device_topic(device: DeviceConfig, profile: Profile) -> str:
    return device.topic or profile.default_topic(device.id)


def check_devices(
    devices: list[DeviceConfig],
    configured_dir: Path | None,
    served_tasks: Iterable[str],
    agent_root: str,
    other_names: Iterable[str] = (),
) -> list[str]:
    """Problems of the device list (empty when fine)."""
    if not devices:
        return []
    try:
        profiles = load_profiles(profiles_dir(configured_dir))
    except ConfigError as exc:
        return exc.problems
    return _check(devices, profiles, set(served_tasks), agent_root, set(other_names))


def _check(
    devices: list[DeviceConfig],
    profiles: Mapping[str, Profile],
    served: set[str],
    agent_root: str,
    taken: set[str],
) -> list[str]:
    problems: list[str] = []
    topics: dict[str, str] = {}
    for i, device in enumerate(devices):
        at = f"devices.{i} ({device.id})"
        if device.id in taken:
            problems.append(f"{at}: the id is used twice (devices and cameras share the ids)")
        taken.add(device.id)
        profile = profiles.get(device.profile)
        if profile is None:
            problems.append(
                f"{at}.profile: unknown profile {device.profile!r}; known: {sorted(profiles)}"
            )
            continue
        channels = profile.channels | set(device.fields)
        for task in device.tasks:
            binding = BINDINGS.get(task)
            if binding is None:
                known = sorted(BINDINGS)
                problems.append(f"{at}.tasks: {task!r} cannot run on a device; known: {known}")
                continue
            if task not in RULES and task not in served:
                problems.append(
                    f"{at}.tasks: {task!r} is not served: add `{task}: {{}}` under `tasks:`"
                )
            missing = sorted(set(binding.channels) - channels)
            if missing:
                problems.append(
                    f"{at}.tasks: {task} needs {missing}, which profile {profile.name} "
                    f"does not read (it reads {sorted(profile.channels)})"
                )
        for channel in device.fields:
            spec = profile.fields.get(channel)
            if spec is not None and spec.type == "samples":
                problems.append(f"{at}.fields: {channel} is a batch of samples; not overridable")
        topic = device_topic(device, profile)
        if "{name}" in topic or not topic.strip("/"):
            problems.append(f"{at}.topic: {topic!r} is not a topic")
        elif overlaps_tree(topic, agent_root):
            problems.append(f"{at}.topic: {topic} is under the agent's own topics")
        elif topic in topics:
            problems.append(f"{at}.topic: {topic} is also the topic of device {topics[topic]}")
        topics.setdefault(topic, device.id)
    return problems
