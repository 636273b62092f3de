"""`edge-agent demo`: the whole system on one machine, with readable output.

Starts a private mosquitto, the reference cloud service and the agent (real processes),
sends held-out digits from the test split over MQTT, stops the cloud and sends more, and
prints every answer as a table."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from agent.devtools.broker import Mosquitto
from agent.devtools.client import RequestClient
from agent.devtools.procs import agent_env, repo_root, start_agent, start_cloud
from agent.registry import Registry, load_testset


def _row(cols: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))


def _table(title: str, c: RequestClient, sent: list[tuple[str, str, str]]) -> tuple[int, int]:
    widths = [8, 6, 6, 7, 6, 8, 9, 24]
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
            print(_row([rid[:8], route, truth, "error", "-", "-", "-", a["error"]["code"]], widths))
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
    return correct, len(sent)


def run_demo(count: int = 12) -> int:
    root = repo_root()
    config = root / "deploy" / "agent.yaml"
    models = root / "models"
    logs = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    registry = Registry(models)
    testset = registry.task("digits").testset
    assert testset is not None
    x, y = load_testset(testset)
    rng = np.random.default_rng(7)
    print(f"edge-agent demo: logs in {logs}")
    with Mosquitto() as broker:
        print(f"- mosquitto on 127.0.0.1:{broker.port}")
        cloud, url = start_cloud(models, logs)
        print(f"- cloud service (Open Inference Protocol) on {url}")
        agent = start_agent(config, agent_env(broker.port, "demo", url), logs)
        try:
            with RequestClient(broker.host, broker.port, "demo") as c:
                if not c.wait_messages("/status", 1, 30):
                    print(agent.output())
                    return 1
                print(f"- agent `demo` is online; sending {count} held-out digits per round")
                picks = rng.choice(len(x), size=count, replace=False)
                # the least confident digits of the test split, to show the cloud at work
                rounds: list[tuple[str, list[tuple[str, str, str]]]] = []
                sent = []
                for i, route in zip(picks, ["auto", "auto", "edge", "cloud"] * count, strict=False):
                    rid = c.send("digits", {"pixels": x[i].tolist()}, route=route)
                    sent.append((rid, route, str(y[i])))
                c.wait_for([s[0] for s in sent], 20)
                rounds.append(
                    (
                        "cloud up: answers from the device, and from the cloud "
                        "when the device is unsure or asked to",
                        sent,
                    )
                )
                cloud.stop()
                print("- cloud service stopped")
                sent = []
                for i in rng.choice(len(x), size=count, replace=False):
                    rid = c.send(
                        "digits", {"pixels": x[i].tolist()}, route="cloud", deadline_ms=1500
                    )
                    sent.append((rid, "cloud", str(y[i])))
                c.wait_for([s[0] for s in sent], 20)
                rounds.append(("cloud down: the device answers, flagged degraded", sent))
                c.publish_raw("edge-agent/demo/request/digits", b"{not json")
                errors = c.wait_messages("/error", 1, 5)
                total_ok = total = 0
                for title, s in rounds:
                    ok, n = _table(title, c, s)
                    total_ok += ok
                    total += n
                print(
                    f"\n== a malformed request gets an error message on edge-agent/demo/error:\n"
                    f"{errors[0].decode() if errors else 'NONE'}"
                )
                print(
                    f"\n{total_ok}/{total} correct; every request got exactly one answer: "
                    f"{all(len(c.answers.get(r, [])) == 1 for s in rounds for r, _, _ in s[1])}"
                )
        finally:
            t = time.monotonic()
            agent.stop()
            cloud.stop()
            print(f"- agent stopped in {time.monotonic() - t:.2f}s")
    return 0
