"""The built-in tasks, by name."""

from __future__ import annotations

from agent.tasks.activity import ActivityTask
from agent.tasks.appliance import ApplianceTask
from agent.tasks.base import Task
from agent.tasks.classify import ClassifyTask
from agent.tasks.digits import DigitsTask
from agent.tasks.person import PersonTask
from agent.tasks.pose import PoseTask

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        DigitsTask(),
        ApplianceTask(),
        ActivityTask(),
        PoseTask(),
        PersonTask(),
        ClassifyTask(),
    )
}

__all__ = ["TASKS", "Task"]
