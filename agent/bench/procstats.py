"""What the benchmark measures about processes: CPU time, peak RSS, start to READY=1, and
CPU pinning (`--cpus N`). Linux only (/proc, sched_setaffinity)."""

from __future__ import annotations

import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process (all its threads) and of the child
    processes it is running (an agent's extra serving processes, `workers.processes`)."""
    total = 0.0
    for p in (pid, *child_pids(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def child_pids(pid: int) -> list[int]:
    """The running children of `pid`, whichever of its threads started them."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class ReadyListener:
    """A systemd-style notify socket: pass `env` to a child, then `wait_ready()`."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="edge-agent-bench-")
        self.path = os.path.join(self._dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.path}

    def wait_ready(self, started: float, timeout: float) -> float | None:
        """Seconds from `started` (monotonic) until READY=1 arrived, or None."""
        end = started + timeout
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return None
            if b"READY=1" in data.split(b"\n"):
                return time.monotonic() - started
        return None

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@contextmanager
def pinned(n: int | None) -> Iterator[list[int]]:
    """Run the block (and every process it starts) on the first `n` allowed CPUs."""
    before = os.sched_getaffinity(0)
    cpus = sorted(before)[:n] if n else sorted(before)
    os.sched_setaffinity(0, cpus)
    try:
        yield cpus
    finally:
        os.sched_setaffinity(0, before)


def _pkg(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    model = "unknown"
    try:
        info = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (
                line.partition(":") for line in Path("/proc/cpuinfo").read_text().splitlines()
            )
        )
        model = info.get("model name") or info.get("hardware") or info.get("model") or model
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    from agent.runtime.tflite import runtime_name

    return {
        "nproc": os.cpu_count(),
        "cpus_allowed": len(allowed_cpus()),
        "cpu_model": model,
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "runtime": runtime_name(),
        "numpy": _pkg("numpy"),
        "paho_mqtt": _pkg("paho-mqtt"),
        "orjson": _pkg("orjson"),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_at_start": load,
    }
