"""The cloud service and the agent as real subprocesses, for the demo, benchmark and tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from agent.devtools.broker import env_without_agent_vars, free_port, wait_port


class Process:
    """A child process whose output goes to a log file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


def python_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def start_cloud(
    models_dir: Path, log_dir: Path, port: int | None = None, extra_args: Sequence[str] = ()
) -> tuple[Process, str]:
    """Start `edge-agent cloud` and wait until /v2/health/ready answers. Returns (proc, url).
    `extra_args` go to `edge-agent cloud` (e.g. `--vision-dir`, `--record`)."""
    port = port or free_port()
    proc = Process(
        "cloud",
        python_argv(
            "cloud",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--models",
            str(models_dir),
            *extra_args,
        ),
        env_without_agent_vars(),
        log_dir,
    ).start()
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if not proc.alive():
            raise RuntimeError(f"cloud service exited: {proc.output()[-2000:]}")
        if wait_port("127.0.0.1", port, 0.2):
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"cloud service not ready: {proc.output()[-2000:]}")


def agent_env(
    broker_port: int, agent_id: str, cloud_url: str | None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = env_without_agent_vars()
    env.update(
        {
            "EDGE_AGENT_ID": agent_id,
            "EDGE_AGENT_MQTT__HOST": "127.0.0.1",
            "EDGE_AGENT_MQTT__PORT": str(broker_port),
            # a fresh outbox/de-duplication state unless `extra` names one to keep
            "EDGE_AGENT_STATE_DIR": tempfile.mkdtemp(prefix="edge-agent-state-"),
        }
    )
    if cloud_url is not None:
        env["EDGE_AGENT_CLOUD__URL"] = cloud_url
    env.update(extra or {})
    return env


def start_agent(
    config: Path, env: Mapping[str, str], log_dir: Path, name: str = "agent"
) -> Process:
    return Process(name, python_argv("run", "-c", str(config)), env, log_dir).start()


def repo_root() -> Path:
    """The source checkout (for deploy/ and models/) when running from one."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "deploy").is_dir() else Path(os.getcwd())
