"""The fault-injection suite: `pytest tests/faults` (CI size, a few minutes) or
`EDGE_AGENT_FAULTS=full pytest tests/faults` (the acceptance sizes of docs/reliability.md).
Set EDGE_AGENT_FAULTS_REPORT=<file> to also get the figures as JSON lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import FULL, REPORTS

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    mode = "full (acceptance sizes)" if FULL else "CI sizes; EDGE_AGENT_FAULTS=full for acceptance"
    terminalreporter.section(f"fault-injection figures ({mode})")
    for entry in REPORTS:
        extra = " ".join(f"{k}={v}" for k, v in entry["extra"].items())
        terminalreporter.write_line(
            f"{entry['scenario']}: sent={entry['sent']} answered={entry['answered']} "
            f"lost={entry['lost']} duplicated={entry['duplicated']} "
            f"max_latency_ms={entry['max_latency_ms']:.0f} p99_ms={entry['p99_ms']:.1f} {extra}"
        )
