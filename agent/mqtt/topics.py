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

    def request(self, task: str) -> str:
        return f"{self.root}/request/{task}"

    def response(self, task: str) -> str:
        return f"{self.root}/response/{task}"

    @property
    def request_filter(self) -> str:
        return f"{self.root}/request/+"

    def task_of_request(self, topic: str) -> str | None:
        """The task level of a request topic, or None if `topic` is not one."""
        prefix = f"{self.root}/request/"
        if topic.startswith(prefix):
            task = topic[len(prefix) :]
            return task if "/" not in task else None
        return None
