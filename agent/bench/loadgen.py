"""The load generator: a separate process that offers requests or collects answers.

`send` publishes QoS 1 requests, pipelined (up to `--inflight` unacknowledged), open-loop
at a fixed rate (`--rate`) or as fast as the broker takes them (`--rate 0`). `recv`
subscribes to the answers and measures each one's latency from the request id, which
carries the send time (`<prefix>.<seq>.<monotonic ns>`; CLOCK_MONOTONIC is system-wide on
Linux, so sender and receiver may be different processes). Several senders and one
receiver together offer far more than one Python process could. `both` does the two in one
process; with `--window W` it is closed-loop (at most W requests unanswered), which keeps an
agent saturated without building an unbounded backlog in the broker.

Every role prints `READY` once connected and runs until the `--until` monotonic time, or
(`--duration`) waits for a `GO` line on stdin and runs that long from then; a receiver then
waits until answers stop (at most `--drain` s). The JSON result goes to `--out`.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from agent.bench.rawmqtt import RawMqtt, publish_packet, utf8

_ID_START = b'{"id":"'


def request_template(body: dict[str, Any]) -> tuple[bytes, bytes]:
    """Split a request body into the bytes before and after the id value."""
    rest = {k: v for k, v in body.items() if k != "id"}
    tail = orjson.dumps(rest)
    return _ID_START, (b'",' + tail[1:]) if rest else b'"}'


def _wait_until(t: float) -> None:
    while (left := t - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))


class Sender:
    def __init__(self, args: argparse.Namespace, window: threading.Semaphore | None) -> None:
        self.args = args
        self.window = window
        self.stalls = 0
        body = orjson.loads(Path(args.payload).read_bytes())
        self.head, self.tail = request_template(body)
        self.mqtt = RawMqtt(args.host, args.port, f"bench-send-{uuid.uuid4().hex[:8]}")

    def _take(self, want: int) -> int:
        """Closed loop: how many of `want` requests the window allows now (at least 1)."""
        window = self.window
        if window is None:
            return want
        if not window.acquire(timeout=1.0):
            self.stalls += 1  # an answer was lost: carry on rather than hang
        got = 1
        while got < want and window.acquire(blocking=False):
            got += 1
        return got

    def run(self) -> dict[str, Any]:
        a = self.args
        topics = [utf8(t) for t in a.topic]
        prefix = a.prefix
        head, tail = self.head, self.tail
        mqtt = self.mqtt
        sent = mid = in_window = 0
        start = a.start or time.monotonic()
        _wait_until(start)
        t0 = time.monotonic()
        window_start_ns = int((t0 + a.warmup) * 1e9)
        end = a.until
        rate = a.rate
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if rate > 0:
                due = int((now - t0) * rate) - sent
                if due <= 0:
                    time.sleep(min(end - now, 1.0 / rate, 0.002))
                    continue
                due = min(due, 256)  # a late sender catches up in bursts, not all at once
            else:
                due = 64
            if sent - mqtt.acked > a.inflight:  # QoS 1 pipelining window is full
                time.sleep(0.0005)
                continue
            due = self._take(due)
            packets = []
            for _ in range(due):
                ns = time.monotonic_ns()
                mid = mid % 65535 + 1
                rid = f"{prefix}.{sent}.{ns}".encode()
                packets.append(publish_packet(topics[sent % len(topics)], mid, head + rid + tail))
                sent += 1
                if ns >= window_start_ns:
                    in_window += 1
            mqtt.send(b"".join(packets))
        elapsed = time.monotonic() - t0
        return {
            "role": "send",
            "sent": sent,
            "sent_in_window": in_window,
            "elapsed_s": elapsed,
            "offered_rps": sent / elapsed if elapsed > 0 else 0.0,
            "target_rps": rate,
            "window_stalls": self.stalls,
        }


class Receiver:
    def __init__(self, args: argparse.Namespace, window: threading.Semaphore | None) -> None:
        self.args = args
        self.window = window
        self.last_answer = time.monotonic()
        self._lock = threading.Lock()
        self.latency_ns: list[int] = []
        self.recv_times: list[int] = []
        self.seen: set[str] = set()
        self.duplicates = 0
        self.failures: dict[str, int] = {}
        self.answers = 0
        self.window_start_ns = 0
        self.window_end_ns = 1 << 62
        self.mqtt = RawMqtt(
            args.host, args.port, f"bench-recv-{uuid.uuid4().hex[:8]}", self._on_message
        )
        for topic in args.answers:
            self.mqtt.subscribe(topic, 1)

    def _on_message(self, topic: str, payload: bytes) -> None:
        now = time.monotonic_ns()
        try:
            body = orjson.loads(payload)
            rid = body["id"]
            sent_ns = int(rid.rsplit(".", 1)[1])
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError, ValueError):
            return
        ok = body.get("ok") is True
        if self.window is not None:
            self.window.release()
        with self._lock:
            self.last_answer = time.monotonic()
            self.answers += 1
            if rid in self.seen:
                self.duplicates += 1
                return
            self.seen.add(rid)
            if not ok:
                error = body.get("error")
                code = str(error.get("code")) if isinstance(error, dict) else "?"
                self.failures[code] = self.failures.get(code, 0) + 1
                return
            self.recv_times.append(now)
            if self.window_start_ns <= sent_ns < self.window_end_ns:
                self.latency_ns.append(now - sent_ns)

    def run(self) -> dict[str, Any]:
        a = self.args
        start = a.start or time.monotonic()
        self.window_start_ns = int((start + a.warmup) * 1e9)
        self.window_end_ns = int(a.window_end * 1e9) if a.window_end else int(a.until * 1e9)
        _wait_until(a.until)
        hard_end = a.until + a.drain
        while time.monotonic() < hard_end:
            with self._lock:
                quiet = time.monotonic() - self.last_answer
            if quiet > 0.5:
                break
            time.sleep(0.1)
        with self._lock:
            lat = np.array(self.latency_ns, dtype=np.float64) / 1e6
            recv = np.array(self.recv_times, dtype=np.int64)
            failures = dict(self.failures)
            answers, duplicates, unique = self.answers, self.duplicates, len(self.seen)
        window_s = (self.window_end_ns - self.window_start_ns) / 1e9
        # Goodput: successful answers received in the window (whenever sent), over the window.
        in_time = int(((recv >= self.window_start_ns) & (recv < self.window_end_ns)).sum())
        return {
            "role": "recv",
            "answers": answers,
            "unique": unique,
            "duplicates": duplicates,
            "failures": failures,
            "ok_in_window": len(lat),
            "ok_received_in_window": in_time,
            "window_s": window_s,
            "throughput_rps": in_time / window_s if window_s > 0 else 0.0,
            "latency_ms": summarize(lat),
            "cdf_ms": cdf_points(lat),
        }


def summarize(lat_ms: np.ndarray[Any, Any]) -> dict[str, float | None]:
    if lat_ms.size == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    p50, p95, p99 = np.percentile(lat_ms, [50, 95, 99])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "max": round(float(lat_ms.max()), 3),
        "mean": round(float(lat_ms.mean()), 3),
    }


def cdf_points(lat_ms: np.ndarray[Any, Any], n: int = 200) -> list[float]:
    """Latency at n+1 evenly spaced quantiles (0..1): enough to draw a CDF."""
    if lat_ms.size == 0:
        return []
    return [round(float(v), 4) for v in np.quantile(lat_ms, np.linspace(0.0, 1.0, n + 1))]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agent.bench.loadgen", description=__doc__)
    p.add_argument("role", choices=["send", "recv", "both"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--topic", action="append", help="send: request topic(s), round robin")
    p.add_argument("--answers", action="append", help="recv: topic filter(s) of the answers")
    p.add_argument("--payload", help="send: JSON file with one request body")
    p.add_argument("--prefix", default="s0", help="send: request id prefix")
    p.add_argument("--rate", type=float, default=0.0, help="send: requests/s; 0 = unpaced")
    p.add_argument("--inflight", type=int, default=1000, help="send: QoS 1 pipelining window")
    p.add_argument("--window", type=int, default=0, help="both: max unanswered; 0 = open loop")
    p.add_argument("--drain", type=float, default=10.0, help="recv: max wait for late answers")
    p.add_argument("--start", type=float, default=0.0, help="monotonic start time")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds excluded from figures")
    p.add_argument("--window-end", type=float, default=0.0, help="recv: end of measured sends")
    p.add_argument("--until", type=float, default=0.0, help="monotonic time to stop")
    p.add_argument("--duration", type=float, default=0.0, help="run this long after GO")
    p.add_argument("--out", required=True, help="where to write the JSON result")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    window = threading.Semaphore(args.window) if args.role == "both" and args.window else None
    try:
        receiver = Receiver(args, window) if args.role in ("recv", "both") else None
        sender = Sender(args, window) if args.role in ("send", "both") else None
    except OSError as exc:
        print(f"cannot connect to the broker: {exc}", file=sys.stderr)
        return 1
    print("READY", flush=True)
    if not args.until:
        if sys.stdin.readline().strip() != "GO":
            return 1
        args.start = time.monotonic()
        args.until = args.start + args.duration
    result: dict[str, Any] = {}
    try:
        if receiver is not None:
            thread = threading.Thread(target=lambda: result.update(recv=receiver.run()))
            thread.start()
        if sender is not None:
            result["send"] = sender.run()
        if receiver is not None:
            thread.join()
    finally:
        for role in (sender, receiver):
            if role is not None:
                role.mqtt.close()
    Path(args.out).write_bytes(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
