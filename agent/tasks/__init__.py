"""The built-in tasks, by name."""

from __future__ import annotations

from agent.tasks.base import Task
from agent.tasks.digits import DigitsTask

TASKS: dict[str, Task] = {task.name: task for task in (DigitsTask(),)}

__all__ = ["TASKS", "Task"]
