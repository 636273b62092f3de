"""`edge-agent demo`: the whole system on one machine, with readable output.

Starts a private mosquitto, the reference cloud service and the agent (real processes) with
the example device config, sends held-out digits from the test split over MQTT, lets the
simulator replay real recordings as plugs, a wearable, a tablet and air sensors publishing in
their own formats, stops the cloud and sends more, and prints every answer as a table."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

from agent.config import load_config
from agent.devtools.broker import Mosquitto
from agent.devtools.client import RequestClient
from agent.devtools.procs import (
    Process,
    agent_env,
    python_argv,
    repo_root,
    start_agent,
    start_cloud,
)
from agent.registry import Registry, load_testset

Sent = list[tuple[str, str, str]]  # (request id, route, true label)


def _row(cols: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))


def _requests_table(title: str, c: RequestClient, sent: Sent) -> int:
    """Print one round of requests; returns how many were right."""
    widths = [8, 6, 6, 7, 6, 7, 26, 9]
    print(f"\n== {title}")
    print(
        _row(
            ["request", "route", "truth", "answer", "score", "source", "degraded", "latency"],
            widths,
        )
    )
    correct = 0
    for rid, route, truth in sent:
        answers = c.answers.get(rid, [])
        if not answers:
            print(_row([rid[:8], route, truth, "-", "-", "-", "-", "NO ANSWER"], widths))
            continue
        a = answers[0]
        if not a["ok"]:
            print(_row([rid[:8], route, truth, "error", "-", "-", a["error"]["code"], "-"], widths))
            continue
        label = a["result"]["label"]
        correct += label == truth
        degraded = f"yes ({a.get('degraded_reason', '')})" if a["degraded"] else "no"
        print(
            _row(
                [
                    rid[:8],
                    route,
                    truth,
                    label + (" ✓" if label == truth else " ✗"),
                    f"{a['result']['score']:.3f}",
                    a["source"],
                    degraded,
                    f"{a['latency_ms']:.1f} ms",
                ],
                widths,
            )
        )
    return correct


def _devices_table(c: RequestClient, devices: dict[str, list[str]]) -> int:
    """Print the results devices produced; returns how many there were."""
    widths = [18, 12, 24, 7, 7, 9]
    print("\n== devices: the simulator replays held-out recordings in each device's own format")
    print(_row(["device", "task", "answer", "score", "source", "latency"], widths))
    seen = 0
    for topic, payload, _ in c.messages:
        parts = topic.split("/")
        if len(parts) != 4 or parts[3] not in devices.get(parts[2], []):
            continue
        body = orjson.loads(payload)
        seen += 1
        if not body.get("ok"):
            print(
                _row([parts[2], parts[3], f"error: {body['error']['code']}", "-", "-", "-"], widths)
            )
            continue
        latency = body.get("latency_ms")
        print(
            _row(
                [
                    parts[2],
                    parts[3],
                    str(body["result"]["label"])[:24],
                    f"{body['result']['score']:.3f}",
                    str(body.get("source", "-")),
                    f"{latency:.1f} ms" if isinstance(latency, (int, float)) else "-",
                ],
                widths,
            )
        )
    return seen


def _send_digits(
    c: RequestClient,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    picks: npt.NDArray[np.int64],
    routes: list[str],
    deadline_ms: int | None = None,
) -> Sent:
    sent = []
    for i, route in zip(picks, routes, strict=True):
        rid = c.send("digits", {"pixels": x[i].tolist()}, route=route, deadline_ms=deadline_ms)
        sent.append((rid, route, str(y[i])))
    c.wait_for([s[0] for s in sent], 20)
    return sent


def run_demo(count: int = 12) -> int:
    root = repo_root()
    config_path = root / "devices" / "example.yaml"
    models = root / "models"
    logs = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    testset = Registry(models).task("digits").testset
    assert testset is not None
    x, y = load_testset(testset)
    rng = np.random.default_rng(7)
    print(f"edge-agent demo: logs in {logs}")
    with Mosquitto() as broker:
        print(f"- mosquitto on 127.0.0.1:{broker.port}")
        cloud, url = start_cloud(models, logs)
        print(f"- cloud service (Open Inference Protocol) on {url}")
        env = agent_env(broker.port, "demo", url)
        devices = {d.id: list(d.tasks) for d in load_config(config_path, environ=env).devices}
        agent = start_agent(config_path, env, logs)
        try:
            # one filter per device: an overlapping `+/+` would deliver responses twice
            results = [f"edge-agent/demo/{device}/+" for device in devices]
            with RequestClient(broker.host, broker.port, "demo", extra_subscriptions=results) as c:
                if not c.wait_messages("/status", 1, 30):
                    print(agent.output())
                    return 1
                print(f"- agent `demo` is online; sending {count} held-out digits per round")
                routes = (["auto", "auto", "edge", "cloud"] * count)[:count]
                up = _send_digits(c, x, y, rng.choice(len(x), count, replace=False), routes)
                print(f"- simulating {len(devices)} devices: {', '.join(devices)}")
                simulator = Process(
                    "simulate",
                    python_argv(
                        "simulate", "-c", str(config_path), "--count", "1", "--window-s", "3"
                    ),
                    env,
                    logs,
                ).start()
                simulator.wait(60)
                time.sleep(2.0)
                cloud.stop()
                print("- cloud service stopped")
                down = _send_digits(
                    c,
                    x,
                    y,
                    rng.choice(len(x), count, replace=False),
                    ["cloud"] * count,
                    deadline_ms=1500,
                )
                c.publish_raw("edge-agent/demo/request/digits", b"{not json")
                errors = c.wait_messages("/error", 1, 5)
                right = _requests_table(
                    "cloud up: answers from the device, and from the cloud "
                    "when the device is unsure or asked to",
                    c,
                    up,
                )
                right += _requests_table(
                    "cloud down: the device answers, flagged degraded", c, down
                )
                if not _devices_table(c, devices):
                    print(simulator.output()[-2000:])
                print("\n== a malformed request gets an error message on edge-agent/demo/error:")
                print(errors[0].decode() if errors else "NONE")
                once = all(len(c.answers.get(r, [])) == 1 for r, _, _ in up + down)
                print(
                    f"\n{right}/{len(up) + len(down)} digits right; "
                    f"every request got exactly one answer: {once}"
                )
        finally:
            began = time.monotonic()
            agent.stop()
            cloud.stop()
            print(f"- agent stopped in {time.monotonic() - began:.2f}s")
    return 0
