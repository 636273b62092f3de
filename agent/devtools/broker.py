"""A private mosquitto broker on a free loopback port, with a temporary config."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(host: str, port: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
    return found


class Mosquitto:
    """`with Mosquitto() as broker:` -> broker.port. Persistence on, so a restart keeps
    sessions and queued QoS 1 messages like a production broker."""

    def __init__(
        self,
        port: int | None = None,
        extra_config: str = "",
        persistence: bool = True,
        allow_anonymous: bool = True,
    ) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._dir = Path(tempfile.mkdtemp(prefix="edge-agent-mosquitto-"))
        self.config_path = self._dir / "mosquitto.conf"
        self.log_path = self._dir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self._dir}/",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            # as deploy/mosquitto/mosquitto.conf: with Nagle's algorithm on, a small packet
            # can wait for a delayed ACK (40 ms), which tests would measure as agent latency
            "set_tcp_nodelay true",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"log_dest file {self.log_path}",
            extra_config,
        ]
        if os.geteuid() == 0:
            # mosquitto started as root drops to the `mosquitto` user, which cannot read
            # private temp dirs (pytest's tmp_path is 0700); a test broker keeps our uid.
            lines.insert(0, "user root")
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=(self._dir / "stderr.log").open("ab"),
        )
        if not wait_port(self.host, self.port, timeout):
            self.stop()
            stderr = (self._dir / "stderr.log").read_text(errors="replace")
            raise RuntimeError(
                f"mosquitto did not start on port {self.port}: {stderr} {self.log()}"
            )
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def env_without_agent_vars() -> dict[str, str]:
    """The current environment minus EDGE_AGENT_* and systemd variables, for subprocesses."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("EDGE_AGENT_")
        and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY")
    }
