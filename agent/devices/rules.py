"""Rule-based device tasks: no model, a published guideline applied to a reading.

`air_quality` classifies indoor CO2 with the German Environment Agency's guide values
(Umweltbundesamt, "Gesundheitliche Bewertung von Kohlendioxid in der Innenraumluft",
Bundesgesundheitsblatt 51:1358-1369, 2008), the basis of its advice for ventilating
classrooms: below 1000 ppm hygienically harmless, 1000-2000 ppm elevated (ventilate),
above 2000 ppm unacceptable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.tasks.base import FloatArray


@dataclass(frozen=True)
class Rule:
    task: str
    labels: tuple[str, ...]
    model: str
    version: str
    channel: str
    thresholds: tuple[float, ...]  # label i when value < thresholds[i]; the last label above

    def evaluate(self, window: FloatArray) -> tuple[str, dict[str, Any]]:
        """(label, the reading it was decided on) for a [1, 1] window."""
        value = float(window[-1, 0])
        label = self.labels[-1]
        for i, limit in enumerate(self.thresholds):
            if value < limit:
                label = self.labels[i]
                break
        return label, {self.channel: round(value, 3)}


RULES: dict[str, Rule] = {
    "air_quality": Rule(
        task="air_quality",
        labels=("good", "moderate", "poor"),
        model="uba-2008-co2",
        version="2008",
        channel="co2",
        thresholds=(1000.0, 2000.0),
    )
}
