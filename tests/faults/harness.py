"""Real processes for the fault scenarios: the agent as a subprocess with a kept state
directory, a requester with a persistent MQTT session, a cloud front that fails on demand,
and the figures every scenario reports."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import random
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np
import orjson

from agent.config import MqttConfig
from agent.devtools.client import parse_answer
from agent.devtools.procs import Process, agent_env, start_agent
from agent.mqtt.client import Message, MqttClient
from agent.registry import load_testset

REPO = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = REPO / "deploy" / "agent.yaml"
MODELS = REPO / "models"
FULL = os.environ.get("EDGE_AGENT_FAULTS", "").lower() == "full"
X_TEST, Y_TEST = load_testset(MODELS / "digits" / "testset.npz")
PIXELS = [x.tolist() for x in X_TEST]

REPORTS: list[dict[str, Any]] = []  # printed by conftest.py at the end of the session


def size(ci: float, full: float) -> float:
    """A scenario parameter: its acceptance size with EDGE_AGENT_FAULTS=full, else CI's."""
    return full if FULL else ci


# ----------------------------------------------------------------------------- figures


@dataclass
class Figures:
    scenario: str
    sent: int
    answered: int
    lost: int
    duplicated: int
    max_latency_ms: float
    p50_ms: float
    p99_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (
            f"{self.scenario}: sent={self.sent} answered={self.answered} lost={self.lost} "
            f"duplicated={self.duplicated} max_latency_ms={self.max_latency_ms:.0f} "
            f"p50_ms={self.p50_ms:.1f} p99_ms={self.p99_ms:.1f} {extra}".rstrip()
        )


def report(figures: Figures) -> Figures:
    """Print a scenario's figures now and keep them for the session summary."""
    print("\nFIGURES " + figures.line(), flush=True)
    entry = {**figures.__dict__, "mode": "full" if FULL else "ci", "ts": time.time()}
    REPORTS.append(entry)
    target = os.environ.get("EDGE_AGENT_FAULTS_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
    return figures


# ----------------------------------------------------------------------------- requester


class _Subscriber:
    """A test MQTT client used as a context manager: connected, subscribed, then stopped."""

    _mqtt: MqttClient
    _what = "client"

    def __enter__(self) -> Self:
        self._mqtt.start()
        if not self._mqtt.wait_connected(10):
            raise RuntimeError(f"{self._what} could not connect")
        time.sleep(0.3)  # SUBACK before anything is published
        return self

    def __exit__(self, *exc: object) -> None:
        self._mqtt.stop()


class LoadClient(_Subscriber):
    """Sends requests and collects answers by id over a persistent MQTT session (clean
    start off, session expiry set, a stable client id), so answers published while it is
    disconnected (a broker restart) are delivered when it is back, as for a real user."""

    def __init__(
        self,
        host: str,
        port: int,
        agent_id: str,
        *,
        client_id: str | None = None,
        base_topic: str = "edge-agent",
        keepalive_s: int = 10,
    ) -> None:
        self.root = f"{base_topic}/{agent_id}"
        self._cond = threading.Condition()
        self.sent_at: dict[str, float] = {}
        self.answers: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self.arrival: list[str] = []  # ids in the order their first answer arrived
        self.errors: list[tuple[float, dict[str, Any]]] = []
        self.status: list[tuple[float, bytes]] = []
        self.stats: dict[str, Any] = {}  # the agent's last retained stats message
        self.redelivered = 0  # answers that came with the DUP flag (broker -> us resends)
        config = MqttConfig(  # type: ignore[call-arg]
            host=host,
            port=port,
            session_expiry_s=3600,
            keepalive_s=keepalive_s,
            reconnect={"min_delay_s": 0.1, "max_delay_s": 1.0},
        )
        self._mqtt = MqttClient(
            config,
            client_id or f"load-{uuid.uuid4().hex[:8]}",
            will=None,
            subscriptions=[
                (f"{self.root}/response/+", 1),
                (f"{self.root}/error", 1),
                (f"{self.root}/status", 1),
                (f"{self.root}/stats", 0),
            ],
            on_message=self._on_message,
            manual_ack=False,
            max_inflight=0,
        )

    _what = "load client"

    def _on_message(self, message: Message) -> None:
        now = time.monotonic()
        with self._cond:
            if message.topic.endswith("/status"):
                self.status.append((now, message.payload))
            elif message.topic.endswith("/stats"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    self.stats = orjson.loads(message.payload)
            elif message.topic.endswith("/error"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    self.errors.append((now, orjson.loads(message.payload)))
            elif (answer := parse_answer(message.payload)) is not None:
                rid, body = answer
                seen = self.answers.setdefault(rid, [])
                if not seen:
                    self.arrival.append(rid)
                elif message.dup:
                    self.redelivered += 1
                seen.append((now, body))
            self._cond.notify_all()

    # ------------------------------------------------------------------ sending

    def send(
        self,
        task: str = "digits",
        input_: dict[str, Any] | None = None,
        *,
        rid: str | None = None,
        route: str | None = None,
        deadline_ms: int | None = None,
    ) -> str:
        rid = rid or uuid.uuid4().hex
        body: dict[str, Any] = {
            "id": rid,
            "input": input_ or {"pixels": PIXELS[random.randrange(len(PIXELS))]},
        }
        if route is not None:
            body["route"] = route
        if deadline_ms is not None:
            body["deadline_ms"] = deadline_ms
        with self._cond:
            self.sent_at.setdefault(rid, time.monotonic())
        self._mqtt.publish(f"{self.root}/request/{task}", orjson.dumps(body), qos=1)
        return rid

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self._mqtt.publish(topic, payload, qos=1)

    def stream(
        self, rate: float, duration_s: float, **kwargs: Any
    ) -> tuple[threading.Thread, list[str]]:
        """Send `rate` requests per second for `duration_s` on a thread."""
        ids: list[str] = []

        def run() -> None:
            start = time.monotonic()
            n = int(rate * duration_s)
            for i in range(n):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                ids.append(self.send(**kwargs))

        thread = threading.Thread(target=run, name="load", daemon=True)
        thread.start()
        return thread, ids

    def stream_during(
        self, faults: Callable[[], None], rate: float, duration_s: float
    ) -> list[str]:
        """`stream` while `faults` (the fault schedule) runs on its own thread; returns the
        ids sent, once both are done."""
        with background(faults):
            sender, ids = self.stream(rate, duration_s)
            sender.join()
        return ids

    # ------------------------------------------------------------------ waiting

    def wait_answered(self, ids: list[str], timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cond:
            while any(i not in self.answers for i in ids):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def wait_status(self, value: bytes, after: float, timeout: float) -> float | None:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, payload in self.status:
                    if payload == value and at >= after:
                        return at
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))

    def figures(self, scenario: str, ids: list[str], **extra: Any) -> Figures:
        with self._cond:
            answered = [i for i in ids if i in self.answers]
            dup = sum(len(self.answers[i]) - 1 for i in answered)
            lat = np.array([(self.answers[i][0][0] - self.sent_at[i]) * 1000.0 for i in answered])
        with self._cond:  # a resent answer is byte-identical; a second answer is not
            second = sum(
                1
                for i in answered
                for _, body in self.answers[i][1:]
                if body.get("latency_ms") != self.answers[i][0][1].get("latency_ms")
            )
        extra = {
            "dup_redelivered_by_broker": self.redelivered,
            "dup_answered_twice": second,
            **extra,
        }
        return Figures(
            scenario=scenario,
            sent=len(ids),
            answered=len(answered),
            lost=len(ids) - len(answered),
            duplicated=dup,
            max_latency_ms=float(lat.max()) if lat.size else 0.0,
            p50_ms=float(np.percentile(lat, 50)) if lat.size else 0.0,
            p99_ms=float(np.percentile(lat, 99)) if lat.size else 0.0,
            extra=extra,
        )

    def first_answers(self, ids: list[str]) -> list[dict[str, Any]]:
        with self._cond:
            return [self.answers[i][0][1] for i in ids if i in self.answers]


# ----------------------------------------------------------------------------- observer


@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic()
    topic: str
    payload: bytes
    dup: bool  # the broker sent it again (QoS 1 DUP flag)


class Recorder(_Subscriber):
    """Records every message on `filters` with its arrival time, over a persistent session
    (as LoadClient), so what the agent publishes while the recorder is cut off by a broker
    outage reaches it on the broker's return, as it would a real subscriber (Home
    Assistant). Retained messages the broker sends because the recorder subscribed again
    are old states, not deliveries: they are counted apart (`retained_on_subscribe`). Also
    publishes, at QoS 1, as a device would."""

    def __init__(self, host: str, port: int, filters: list[str]) -> None:
        self._cond = threading.Condition()
        self.arrivals: list[Arrival] = []
        self.retained_on_subscribe = 0
        config = MqttConfig(  # type: ignore[call-arg]
            host=host,
            port=port,
            session_expiry_s=3600,
            keepalive_s=10,
            reconnect={"min_delay_s": 0.1, "max_delay_s": 1.0},
        )
        self._mqtt = MqttClient(
            config,
            f"recorder-{uuid.uuid4().hex[:8]}",
            will=None,
            subscriptions=[(f, 1) for f in filters],
            on_message=self._on_message,
            manual_ack=False,
            max_inflight=0,
        )

    _what = "recorder"

    def _on_message(self, message: Message) -> None:
        now = time.monotonic()
        with self._cond:
            if message.retain:
                self.retained_on_subscribe += 1
            else:
                self.arrivals.append(Arrival(now, message.topic, message.payload, message.dup))
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        self._mqtt.publish(topic, payload, qos=1)

    def on(self, topic: str) -> list[Arrival]:
        with self._cond:
            return [a for a in self.arrivals if a.topic == topic]

    def wait(self, done: Callable[[list[Arrival]], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._cond:
            while not done(self.arrivals):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True


# ----------------------------------------------------------------------------- the agent


class AgentProcess:
    """`edge-agent run` as a subprocess that can be SIGKILLed and started again with the
    same state directory (outbox, de-duplication window) and MQTT client id."""

    def __init__(
        self,
        broker_port: int,
        cloud_url: str | None,
        work: Path,
        *,
        agent_id: str | None = None,
        env: dict[str, str] | None = None,
        config: Path = DEPLOY_CONFIG,
    ) -> None:
        self.agent_id = agent_id or f"f{uuid.uuid4().hex[:8]}"
        self.config = config
        self.work = work
        self.state_dir = work / "state"
        self.env = agent_env(
            broker_port,
            self.agent_id,
            cloud_url,
            {
                "EDGE_AGENT_STATE_DIR": str(self.state_dir),
                "EDGE_AGENT_MQTT__RECONNECT__MIN_DELAY_S": "0.2",
                "EDGE_AGENT_STATS__INTERVAL_S": "5",
                **(env or {}),
            },
        )
        self.proc: Process | None = None
        self.starts = 0

    def start(self) -> AgentProcess:
        self.starts += 1
        self.proc = start_agent(self.config, self.env, self.work, name="agent")
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        return self.proc.stop() if self.proc is not None else None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def output(self) -> str:
        return self.proc.output()[-4000:] if self.proc is not None else ""

    def outbox_rows(self) -> list[bytes]:
        """Payloads waiting in the outbox, in order (read-only, while the agent runs)."""
        return [payload for _, _, payload in self.outbox_messages()]

    def outbox_messages(self) -> list[tuple[float, str, bytes]]:
        """(stored at, wall clock; topic; payload) of the messages waiting in the outbox,
        in order."""
        path = self.state_dir / f"outbox-{self.agent_id}.sqlite3"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute("SELECT created, topic, payload FROM outbox ORDER BY seq")
            return [(float(c), str(t), bytes(p)) for c, t, p in rows.fetchall()]
        finally:
            db.close()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


# ----------------------------------------------------------------------------- the cloud


class FaultyCloud:
    """An HTTP front for the cloud service that forwards, delays or fails on demand:
    `mode` is `pass`, `slow` (sleep `delay_s` then forward), `status` (answer `status`,
    with `Retry-After: retry_after` if set) or `hang` (never answer)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self.delay_s = 0.0
        self.status = 500
        self.retry_after: str | None = None
        self.requests = 0
        self._client = httpx.Client(base_url=upstream, timeout=30)
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                self._forward(self.rfile.read(length))

            def _forward(self, body: bytes | None) -> None:
                with contextlib.suppress(OSError):  # the agent may be killed mid-request
                    self._answer(body)

            def _answer(self, body: bytes | None) -> None:
                front.requests += 1
                mode = front.mode
                if mode == "hang":
                    time.sleep(60)
                    return
                if mode == "slow":
                    time.sleep(front.delay_s)
                if mode == "status":
                    data = b'{"error": "injected"}'
                    self.send_response(front.status)
                    if front.retry_after is not None:
                        self.send_header("Retry-After", front.retry_after)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                try:
                    if body is None:
                        up = front._client.get(self.path)
                    else:
                        up = front._client.post(
                            self.path, content=body, headers={"content-type": "application/json"}
                        )
                except httpx.HTTPError:
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(up.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(up.content)))
                self.end_headers()
                self.wfile.write(up.content)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyCloud:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


@contextlib.contextmanager
def background(fn: Callable[[], None], name: str = "fault") -> Iterator[threading.Thread]:
    """Run `fn` (the fault schedule) on a thread for the duration of the block."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    yield thread
    thread.join(300)
    if errors:
        raise errors[0]
