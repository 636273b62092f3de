"""The agent's topic tree. Everything the agent publishes is built here from validated
parts, so nothing a client sends can inject wildcards or levels into a topic."""

from __future__ import annotations

import re
from dataclasses import dataclass

_LEVEL = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def safe_level(value: str) -> bool:
    """True when `value` is usable as one topic level (no '/', '+', '#', NUL, spaces)."""
    return bool(_LEVEL.match(value))


@dataclass(frozen=True)
class Topics:
    base: str
    agent_id: str
    group: str | None = None  # scale-out: requests and answers live under the group's name
    # `workers.processes` > 1 (alone): the agent's serving processes share its requests
    serve_share: str | None = None

    @property
    def root(self) -> str:
        return f"{self.base}/{self.agent_id}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def error(self) -> str:
        return f"{self.root}/error"

    @property
    def stats(self) -> str:
        return f"{self.root}/stats"

    @property
    def service_root(self) -> str:
        """Where requests and answers live: this agent's root, or the scale-out group's."""
        return f"{self.base}/{self.group}" if self.group else self.root

    def request(self, task: str) -> str:
        return f"{self.service_root}/request/{task}"

    def response(self, task: str) -> str:
        return f"{self.service_root}/response/{task}"

    @property
    def request_filter(self) -> str:
        return f"{self.service_root}/request/+"

    def request_subscriptions(self, tasks: list[str]) -> list[str]:
        """Alone: one filter for every task (unknown tasks get an error answer). In a group:
        one MQTT 5 shared subscription per served task, so the broker hands each request to
        one member that serves that task."""
        if not self.group:
            if self.serve_share:
                return [f"$share/{self.serve_share}/{self.request_filter}"]
            return [self.request_filter]
        return [f"$share/{self.group}/{self.request(task)}" for task in tasks]

    @property
    def events(self) -> str:
        """Camera events (Frigate-style start/update/end), all cameras."""
        return f"{self.root}/events"

    def camera(self, camera: str, *leaf: str) -> str:
        """`<root>/camera/<camera>/<leaf...>`; names are checked topic levels."""
        for level in (camera, *leaf):
            if not safe_level(level):
                raise ValueError(f"not a topic level: {level!r}")
        return "/".join((self.root, "camera", camera, *leaf))

    def task_of_request(self, topic: str) -> str | None:
        """The task level of a request topic, or None if `topic` is not one."""
        prefix = f"{self.service_root}/request/"
        if topic.startswith(prefix):
            task = topic[len(prefix) :]
            return task if "/" not in task else None
        return None

    def device_result(self, device: str, task: str) -> str:
        """A device's latest result of a task (retained); ids are checked by the config."""
        return f"{self.root}/{device}/{task}"

    def device_availability(self, device: str) -> str:
        """`online`/`offline` of a device (retained)."""
        return f"{self.root}/{device}/availability"

    @property
    def bridge_request_filter(self) -> str:
        return f"{self.root}/bridge/request/+"

    def bridge_response(self, op: str) -> str:
        return f"{self.root}/bridge/response/{op}"

    def bridge_op(self, topic: str) -> str | None:
        """The operation level of a bridge request topic, or None if `topic` is not one."""
        prefix = f"{self.root}/bridge/request/"
        if topic.startswith(prefix):
            op = topic[len(prefix) :]
            return op if "/" not in op else None
        return None
