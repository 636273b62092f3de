"""The processes of a benchmark run: the systems under test (naive baseline, agent) and
the load generator, with what is measured about them (READY time, CPU time, peak RSS)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from agent.bench.procstats import ReadyListener, cpu_seconds, peak_rss_mb
from agent.devtools.broker import env_without_agent_vars

BASE = "edge-agent"
# Baseline systems -> their modules: `naive` is the tutorial paho loop of the goals;
# `naive-lean` the same loop on the agent's own MQTT client (a stricter baseline).
BASELINES = {"naive": "agent.bench.tutorial", "naive-lean": "agent.bench.naive"}


class Loadgen:
    """One `python -m agent.bench.loadgen both` process, started and then released by GO."""

    def __init__(
        self,
        port: int,
        topic: str,
        answers: str,
        payload: Path,
        out: Path,
        *,
        rate: float,
        window: int,
        duration: float,
        warmup: float,
        prefix: str,
        drain: float = 15.0,
    ) -> None:
        self.out = out
        self.duration, self.warmup = duration, warmup
        argv = [
            sys.executable,
            "-m",
            "agent.bench.loadgen",
            "both",
            "--port",
            str(port),
            "--topic",
            topic,
            "--answers",
            answers,
            "--payload",
            str(payload),
            "--rate",
            str(rate),
            "--window",
            str(window),
            "--duration",
            str(duration),
            "--warmup",
            str(warmup),
            "--prefix",
            prefix,
            "--out",
            str(out),
            "--drain",
            str(drain),
        ]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env_without_agent_vars(),
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.proc.kill()
            raise RuntimeError(f"load generator failed: {line}{self.proc.stdout.read()[-1000:]}")

    def run(self, watch_pid: int | None) -> dict[str, Any]:
        assert self.proc.stdin is not None
        go = time.monotonic()
        self.proc.stdin.write("GO\n")
        self.proc.stdin.flush()
        cpu = None
        if watch_pid is not None:
            time.sleep(max(0.0, go + self.warmup - time.monotonic()))
            c0, t0 = cpu_seconds(watch_pid), time.monotonic()
            time.sleep(max(0.0, go + self.duration - time.monotonic()))
            cpu = {"cpu_s": cpu_seconds(watch_pid) - c0, "wall_s": time.monotonic() - t0}
        try:
            self.proc.wait(self.duration + 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError("load generator did not finish") from None
        result: dict[str, Any] = orjson.loads(self.out.read_bytes())
        if cpu is not None:
            result["cpu"] = cpu
        return result


def _agent_config(
    path: Path,
    port: int,
    agent_id: str,
    models: Path,
    tasks: list[str],
    group: str | None = None,
    processes: int = 1,
) -> Path:
    config: dict[str, Any] = {
        "id": agent_id,
        "base_topic": BASE,
        "log_level": "WARNING",
        "mqtt": {"host": "127.0.0.1", "port": port, "session_expiry_s": 0},
        "models": {"dir": str(models.resolve())},
        "tasks": {t: {"cloud": False} for t in tasks},
    }
    if group:
        config["scale_out"] = {"group": group}
    if processes > 1:
        config["workers"] = {"processes": processes}
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


class System:
    """A system under test as a process: a baseline (BASELINES) or the agent."""

    def __init__(
        self,
        kind: str,
        port: int,
        tasks: list[str],
        models_dir: Path,
        work: Path,
        agent_id: str,
        group: str | None = None,
        processes: int = 1,
    ) -> None:
        self.kind, self.agent_id = kind, agent_id
        self.root = f"{BASE}/{group or agent_id}"
        listener = ReadyListener()
        env = env_without_agent_vars() | listener.env
        if kind in BASELINES:
            argv = [
                sys.executable,
                "-m",
                BASELINES[kind],
                "--port",
                str(port),
                "--id",
                agent_id,
                "--models",
                str(models_dir),
            ]
            argv += [a for t in tasks for a in ("--task", t)]
        else:
            cfg = _agent_config(
                work / f"{agent_id}.yaml", port, agent_id, models_dir, tasks, group, processes
            )
            argv = [sys.executable, "-m", "agent", "run", "-c", str(cfg)]
        self.log_path = work / f"{agent_id}.log"
        with self.log_path.open("ab") as log:
            started = time.monotonic()
            self.proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            self.ready_s = listener.wait_ready(started, 60)
        finally:
            listener.close()
        if self.ready_s is None:
            self.stop()
            raise RuntimeError(f"{kind} never sent READY=1: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> float:
        rss = peak_rss_mb(self.proc.pid) if self.proc.poll() is None else 0.0
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return rss


def summary(res: dict[str, Any]) -> dict[str, Any]:
    recv, send = res["recv"], res["send"]
    out = {
        "offered_rps": round(send["offered_rps"], 1),
        "throughput_rps": round(recv["throughput_rps"], 1),
        "latency_ms": recv["latency_ms"],
        "ok": recv["ok_in_window"],
        "failures": recv["failures"],
        "duplicates": recv["duplicates"],
        "unanswered": send["sent"] - recv["unique"],
        "cdf_ms": recv["cdf_ms"],
    }
    if "cpu" in res and recv["ok_received_in_window"]:
        cpu = res["cpu"]
        out["cpu_ms_per_request"] = round(cpu["cpu_s"] * 1000 / recv["ok_received_in_window"], 4)
        out["cpu_cores_busy"] = round(cpu["cpu_s"] / cpu["wall_s"], 2)
    return out


class Contender:
    """A system under test that can be restarted (after an overload it cannot drain) while
    keeping its first start-to-READY time and the highest peak RSS of its processes."""

    def __init__(
        self, kind: str, port: int, tasks: list[str], models_dir: Path, work: Path
    ) -> None:
        self.kind, self.port, self.tasks, self.models_dir, self.work = (
            kind,
            port,
            tasks,
            models_dir,
            work,
        )
        self.starts = 0
        self.system = self._start()
        self.ready_s = self.system.ready_s or 0.0
        self.peak_rss_mb = 0.0  # while it kept up with the offered load
        self.peak_rss_overload_mb = 0.0  # after a run above its capacity

    def _start(self) -> System:
        self.starts += 1
        return System(
            self.kind,
            self.port,
            self.tasks,
            self.models_dir,
            self.work,
            f"bench-{self.kind}-{self.starts}",
        )

    def restart(self) -> None:
        self.stop()
        self.system = self._start()

    def stop(self) -> None:
        self.system.stop()

    def rss_mb(self) -> float:
        return peak_rss_mb(self.system.proc.pid) if self.system.proc.poll() is None else 0.0
