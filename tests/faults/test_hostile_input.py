"""Hostile input: thousands of malformed payloads of 20 kinds, interleaved with valid
requests, against the agent as a subprocess. One error message each, the process alive,
its memory flat, and every valid request answered."""

from __future__ import annotations

import base64
import random
import struct
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

import orjson

from agent.devtools.broker import Mosquitto
from tests.faults.harness import PIXELS, AgentProcess, LoadClient, report, rss_mb, size

MAX_PAYLOAD = 65_536  # the scenario's limits.max_payload_bytes (keeps the traffic small)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    body += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    return b"\x89PNG\r\n\x1a\n" + body


def _req(rid: str, input_: object, **more: object) -> bytes:
    return orjson.dumps({"id": rid, "input": input_, **more})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# (kind, task level, payload factory, the error code it must get)
KINDS: list[tuple[str, str, object, str]] = [
    ("not JSON", "digits", lambda r: b"this is not json", "invalid_json"),
    ("empty", "digits", lambda r: b"", "invalid_json"),
    ("invalid UTF-8", "digits", lambda r: b"\xff\xfe\x00{garbage", "invalid_json"),
    ("a JSON array", "digits", lambda r: b"[1, 2, 3]", "invalid_request"),
    ("no id", "digits", lambda r: b'{"input": {"pixels": []}}', "missing_id"),
    ("NUL in id", "digits", lambda r: _req(f"{r}\x00x", {}), "invalid_request"),
    ("topic chars in id", "digits", lambda r: _req(f"{r}/#/+", {}), "invalid_request"),
    (
        "NaN",
        "digits",
        lambda r: b'{"id": "%s", "input": {"pixels": [[NaN]]}}' % r.encode(),
        "not_finite",
    ),
    (
        "Infinity",
        "digits",
        lambda r: b'{"id": "%s", "input": {"pixels": [[-Infinity]]}}' % r.encode(),
        "not_finite",
    ),
    ("deep nesting", "digits", lambda r: b"[" * 20_000 + b"]" * 20_000, "invalid_json"),
    ("huge array", "digits", lambda r: _req(r, {"pixels": [[1] * 8] * 3000}), "invalid_input"),
    (
        "strings for numbers",
        "digits",
        lambda r: _req(r, {"pixels": [["1"] * 8] * 8}),
        "invalid_input",
    ),
    (
        "booleans for numbers",
        "digits",
        lambda r: _req(r, {"pixels": [[True] * 8] * 8}),
        "invalid_input",
    ),
    ("not base64", "digits", lambda r: _req(r, {"image": "!!!not base64!!!"}), "invalid_input"),
    (
        "image that does not decode",
        "digits",
        lambda r: _req(r, {"image": _b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)}),
        "invalid_image",
    ),
    (
        "gigapixel image",
        "digits",
        lambda r: _req(r, {"image": _b64(_png_header(60_000, 60_000))}),
        "image_too_large",
    ),
    (
        "payload too large",
        "digits",
        lambda r: b'{"id": "x", "pad": "' + b"x" * MAX_PAYLOAD + b'"}',
        "payload_too_large",
    ),
    ("unknown task", "no-such-task", lambda r: _req(r, {}), "unknown_task"),
    ("negative deadline", "digits", lambda r: _req(r, {}, deadline_ms=-5), "invalid_request"),
    ("unknown route", "digits", lambda r: _req(r, {}, route="moon"), "invalid_request"),
]
assert len(KINDS) == 20


def test_malformed_payloads_each_get_one_error(tmp_path: Path) -> None:
    per_kind = int(size(50, 500))
    valid_every = 10
    with Mosquitto() as broker:
        agent = AgentProcess(
            broker.port,
            None,
            tmp_path,
            env={"EDGE_AGENT_LIMITS__MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD)},
        )
        with LoadClient(broker.host, broker.port, agent.agent_id) as client:
            since = time.monotonic()
            agent.start()
            assert client.wait_status(b"online", since, 30), agent.output()
            try:
                plan = [k for k in range(len(KINDS)) for _ in range(per_kind)]
                random.shuffle(plan)
                warm = 200
                expected: Counter[str] = Counter()
                valid: list[str] = []
                rss_start = 0.0
                start = time.monotonic()
                for n, k in enumerate(plan):
                    if n == warm:  # after a warm-up of every kind: the baseline
                        client.wait_answered(valid, 10)
                        time.sleep(1.0)
                        rss_start = rss_mb(agent.pid)
                    _, task, make, code = KINDS[k]
                    payload = make(uuid.uuid4().hex)  # type: ignore[operator]
                    client.publish_raw(f"{client.root}/request/{task}", payload)
                    expected[code] += 1
                    if n % valid_every == 0:
                        valid.append(client.send(input_={"pixels": PIXELS[n % len(PIXELS)]}))
                    if n % 50 == 0:  # about 500 messages a second
                        time.sleep(max(0.0, start + n / 500 - time.monotonic()))
                end = time.monotonic() + 60
                while time.monotonic() < end and len(client.errors) < len(plan):
                    time.sleep(0.2)
                time.sleep(1.0)  # nothing more may arrive
                assert client.wait_answered(valid, 20)
                rss_end = rss_mb(agent.pid)
                codes = Counter(e["code"] for _, e in client.errors)
                # On a saturated machine the queue may fill: `overloaded` is then the one
                # error a message gets (a valid request also gets it, as `ok: false`).
                valid_overloaded = sum(
                    1
                    for a in client.first_answers(valid)
                    if not a["ok"] and a["error"]["code"] == "overloaded"
                )
                malformed_overloaded = codes["overloaded"] - valid_overloaded
                figures = report(
                    client.figures(
                        f"{len(plan)} malformed payloads of {len(KINDS)} kinds",
                        valid,
                        malformed=len(plan),
                        error_messages=len(client.errors) - valid_overloaded,
                        overloaded=codes["overloaded"],
                        rss_growth_mb=round(rss_end - rss_start, 1),
                        rss_mb=round(rss_end, 1),
                        agent_alive=agent.alive(),
                    )
                )
                assert agent.alive(), agent.output()
                assert len(client.errors) == len(plan) + valid_overloaded, codes
                del codes["overloaded"]
                assert not codes - expected, codes - expected
                assert sum((expected - codes).values()) == malformed_overloaded
                assert figures.lost == 0
                answers = client.first_answers(valid)
                refused = [a for a in answers if not a["ok"]]
                assert all(a["error"]["code"] == "overloaded" for a in refused)
                assert rss_end - rss_start < 20.0
            finally:
                agent.stop()
