"""`edge-agent bench` end to end with tiny counts: the machinery and the report's structure.

Functional only: no figure is asserted against a threshold (the machine is shared and
noisy; performance is reported as ratios measured in one run, see docs/performance.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from agent.bench.loadgen import request_template
from agent.bench.rawmqtt import publish_packet, utf8
from agent.bench.report import goals, markdown
from agent.mqtt.codec import varint


def test_varint_and_publish_packet_encoding() -> None:
    assert varint(0) == b"\x00"
    assert varint(127) == b"\x7f"
    assert varint(128) == b"\x80\x01"
    assert varint(16_383) == b"\xff\x7f"
    pkt = publish_packet(utf8("a/b"), 7, b"hi")
    # QoS 1 PUBLISH, remaining length 10: topic (2+3), packet id (2), no properties (1), "hi"
    assert pkt == b"\x32\x0a\x00\x03a/b\x00\x07\x00hi"


def test_request_template_puts_the_id_first() -> None:
    head, tail = request_template({"id": "x", "input": {"pixels": [[1]]}})
    body = orjson.loads(head + b"s0.1.42" + tail)
    assert body == {"id": "s0.1.42", "input": {"pixels": [[1]]}}
    head, tail = request_template({"id": "x"})
    assert orjson.loads(head + b"y" + tail) == {"id": "y"}


@pytest.mark.slow
def test_bench_smoke_writes_json_markdown_and_plots(tmp_path: Path, digits_models: Path) -> None:
    models = digits_models
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "bench",
            "--smoke",
            "--no-camera",
            "--models",
            str(models),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = orjson.loads((out / "bench.json").read_bytes())

    assert report["mode"] == "smoke"
    machine = report["machine"]
    assert machine["nproc"] >= 1 and machine["python"] and "litert" in machine["runtime"] + "tflite"
    raw = report["raw"]["digits"]
    assert raw["batch1"]["samples_per_s"] > 0 and raw["batched"]["samples_per_s"] > 0
    assert report["generator_offer_rps"] > 0
    for kind in ("naive", "naive-lean", "agent"):
        system = report["systems"][kind]
        assert 0 < system["ready_s"] < 60
        assert system["peak_rss_mb"] > 10
        task = system["tasks"]["digits"]
        sat = task["saturation"]
        assert sat["throughput_rps"] > 0 and sat["cpu_ms_per_request"] > 0
        assert sat["duplicates"] == 0
        for rate in ("100", "1000"):
            run = task["rates"][rate]
            assert run["latency_ms"]["p99"] is not None, run
            assert run["duplicates"] == 0 and not run["failures"], run
            assert len(run["cdf_ms"]) == 201
    ratios = report["ratios"]["digits"]
    assert ratios["saturation_agent_over_naive"] is not None
    assert report["ratios_naive_lean"]["digits"]["saturation_agent_over_naive"] is not None
    assert ratios["saturation_agent_over_raw_batch1"] is not None
    assert {g["goal"].split(" ")[0] for g in report["goals"]} >= {"saturation", "p99", "peak"}
    if machine["cpus_allowed"] >= 2:
        assert [len(s["cpus"]) for s in report["scaling"]] == [1, 2, 2]
        assert [s["processes"] for s in report["scaling"]] == [1, 1, 2]

    md = (out / "bench.md").read_text()
    assert "| digits | naive |" in md and "| digits | agent |" in md
    assert "| digits | naive-lean |" in md and "Against naive-lean on digits" in md
    assert "raw interpreter" in md and "Ratios on digits" in md
    assert md in proc.stdout  # the table is printed too
    for png in ("throughput.png", "latency_cdf.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_and_goals_from_a_minimal_report() -> None:
    run = {
        "offered_rps": 100.0,
        "throughput_rps": 100.0,
        "cdf_ms": [],
        "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0},
    }
    sat = {"throughput_rps": 3000.0, "cpu_ms_per_request": 0.2}
    system = {
        "ready_s": 1.0,
        "peak_rss_mb": 100.0,
        "tasks": {"digits": {"saturation": sat, "rates": {"100": run, "1000": run}}},
    }
    naive = {
        "ready_s": 1.0,
        "peak_rss_mb": 90.0,
        "tasks": {
            "digits": {
                "saturation": {**sat, "throughput_rps": 1000.0},
                "rates": {
                    "100": run,
                    "1000": {**run, "latency_ms": {"p50": 2.0, "p95": 4.0, "p99": 6.0}},
                },
            }
        },
    }
    report = {
        "mode": "quick",
        "elapsed_s": 1.0,
        "generator_offer_rps": 50000.0,
        "plan": {"fixed_rates": [100, 1000]},
        "machine": {
            "cpu_model": "x",
            "cpus_used": [0],
            "nproc": 1,
            "python": "3",
            "runtime": "r",
            "paho_mqtt": "2",
            "loadavg_at_start": [],
        },
        "raw": {
            "digits": {
                "batch1": {"batch": 1, "samples_per_s": 30000.0},
                "batched": {"batch": 16, "samples_per_s": 90000.0},
            }
        },
        "systems": {"naive": naive, "agent": system},
        "scaling": [],
    }
    report["goals"] = goals(report)
    assert [g["ok"] for g in report["goals"]] == [True, True, True, True]
    text = markdown(report)
    assert "**3.0x**" in text and "| digits | agent | 3,000 |" in text
