"""The README's demo command (`edge-agent demo`, what scripts/demo.sh runs) works."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_demo_shows_answers_from_edge_cloud_devices_and_degraded() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--count", "4"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "every request got exactly one answer: True" in out
    assert "8/8 digits right" in out
    assert " cloud " in out and " edge " in out and "yes (" in out  # degraded rows
    for device in ("kitchen-plug", "wrist-7", "room-12-tablet-3", "room-12-air"):
        assert device in out.split("== devices")[1], out
    assert '"code":"invalid_json"' in out
