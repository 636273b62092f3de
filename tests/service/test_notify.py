"""The sd_notify protocol against a real AF_UNIX datagram socket, as systemd sees it."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service.notify import Notifier
from agent.service.watchdog import WatchdogLoop


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def recv(self) -> str:
        return self.sock.recv(4096).decode()

    def drain(self, wait: float = 0.0) -> list[str]:
        """Everything received within ``wait`` seconds."""
        messages: list[str] = []
        deadline = time.monotonic() + wait
        while True:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                messages.append(self.recv())
            except TimeoutError:
                return messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[FakeSystemd, str]]:
    path = str(tmp_path / "notify.sock")
    fake = FakeSystemd(path)
    yield fake, path
    fake.close()


def test_no_socket_means_noop() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False


def test_exact_datagrams(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    assert notifier.enabled

    assert notifier.ready("connected to broker\nmodels loaded")
    assert fake.recv() == "READY=1\nSTATUS=connected to broker models loaded"
    assert notifier.ready()
    assert fake.recv() == "READY=1"
    assert notifier.status("3 models, 12 req/s")
    assert fake.recv() == "STATUS=3 models, 12 req/s"
    assert notifier.watchdog()
    assert fake.recv() == "WATCHDOG=1"
    assert notifier.stopping("SIGTERM")
    assert fake.recv() == "STOPPING=1\nSTATUS=SIGTERM"
    assert notifier.extend_timeout(90)
    assert fake.recv() == "EXTEND_TIMEOUT_USEC=90000000"

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", fake.recv())
    assert match is not None
    assert before <= int(match.group(1)) <= after
    notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"edge-agent-test-{os.getpid()}-{time.monotonic_ns()}"
    fake = FakeSystemd("\0" + name)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert fake.recv() == "READY=1"
    finally:
        fake.close()


def test_watchdog_interval_is_half_the_period(systemd: tuple[FakeSystemd, str]) -> None:
    _, path = systemd
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}
    assert Notifier(env).watchdog_interval() == 15.0
    assert Notifier(env | {"WATCHDOG_PID": str(os.getpid())}).watchdog_interval() == 15.0


@pytest.mark.parametrize(
    "extra",
    [{"WATCHDOG_PID": "1"}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "junk"}, {}],
    ids=["other-pid", "zero", "malformed", "unset"],
)
def test_watchdog_disabled(systemd: tuple[FakeSystemd, str], extra: dict[str, str]) -> None:
    fake, path = systemd
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"} if extra else {"NOTIFY_SOCKET": path}
    notifier = Notifier(env | extra)
    assert notifier.watchdog_interval() is None
    assert notifier.watchdog() is False
    assert fake.drain() == []


def test_send_errors_never_raise(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert notifier.enabled
    assert notifier.ready("x") is False  # ENOENT / ECONNREFUSED, swallowed
    assert Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled is False


def test_sends_from_many_threads(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    notifier = Notifier({"NOTIFY_SOCKET": path})
    threads = [threading.Thread(target=notifier.status, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(fake.drain(0.5)) == sorted(f"STATUS=t{i}" for i in range(8))


def test_watchdog_loop_pets_only_while_healthy(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    # WATCHDOG_USEC=100 ms -> pets every 50 ms.
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    healthy = threading.Event()
    healthy.set()
    loop = WatchdogLoop(notifier, lambda: (healthy.is_set(), "inference worker stuck"))
    assert loop.interval == 0.05
    loop.start()
    try:
        assert fake.recv() == "WATCHDOG=1"
        assert fake.recv() == "WATCHDOG=1"

        healthy.clear()
        fake.drain(0.15)  # at most one pet was already in flight
        assert fake.drain(0.3) == []

        healthy.set()
        assert fake.recv() == "WATCHDOG=1"
    finally:
        loop.stop()
    assert not loop.running
    fake.drain(0.1)
    assert fake.drain(0.2) == []


def test_watchdog_loop_logs_reason_once(
    systemd: tuple[FakeSystemd, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, path = systemd
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    loop = WatchdogLoop(notifier, lambda: (False, "mqtt loop not running"))
    with caplog.at_level("WARNING", logger="agent.service.watchdog"):
        assert loop.check_once() is False
        assert loop.check_once() is False
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["health check failed, not petting the watchdog: mqtt loop not running"]


def test_crashing_health_check_is_unhealthy(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})

    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    assert WatchdogLoop(notifier, broken).check_once() is False
    assert fake.drain(0.1) == []


def test_watchdog_loop_without_watchdog_does_nothing() -> None:
    loop = WatchdogLoop(Notifier({}), lambda: (True, ""))
    assert loop.interval is None
    loop.start()
    assert not loop.running
    loop.stop()
