"""A request client for the agent's MQTT API: send requests, collect answers by id."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import orjson

from agent.config import MqttConfig
from agent.mqtt.client import Message, MqttClient


def parse_answer(payload: bytes) -> tuple[str, dict[str, Any]] | None:
    """An answer's request id and body; None for anything else (not JSON, no string id)."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    rid = body.get("id") if isinstance(body, dict) else None
    return (rid, body) if isinstance(rid, str) else None


class RequestClient:
    def __init__(
        self,
        host: str,
        port: int,
        agent_id: str,
        base_topic: str = "edge-agent",
        extra_subscriptions: list[str] | None = None,
    ) -> None:
        self.root = f"{base_topic}/{agent_id}"
        self._lock = threading.Condition()
        self.answers: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.messages: list[tuple[str, bytes, float]] = []
        self.sent_at: dict[str, float] = {}
        self.received_at: dict[str, float] = {}
        subs = [
            (f"{self.root}/response/+", 1),
            (f"{self.root}/error", 1),
            (f"{self.root}/status", 1),
        ]
        subs += [(t, 1) for t in extra_subscriptions or []]
        config = MqttConfig(host=host, port=port, session_expiry_s=0)  # type: ignore[call-arg]
        self._mqtt = MqttClient(
            config,
            f"edge-agent-client-{uuid.uuid4().hex[:8]}",
            will=None,
            subscriptions=subs,
            on_message=self._on_message,
            manual_ack=False,
        )

    def __enter__(self) -> RequestClient:
        self._mqtt.start()
        if not self._mqtt.wait_connected(10):
            raise RuntimeError("request client could not connect to the broker")
        time.sleep(0.2)  # let the SUBACK arrive before the first request
        return self

    def __exit__(self, *exc: object) -> None:
        self._mqtt.stop()

    def _on_message(self, message: Message) -> None:
        now = time.monotonic()
        with self._lock:
            self.messages.append((message.topic, message.payload, now))
            if "/response/" in message.topic:
                answer = parse_answer(message.payload)
                if answer is not None:
                    rid, body = answer
                    self.answers[rid].append(body)
                    self.received_at.setdefault(rid, now)
            self._lock.notify_all()

    def publish_raw(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self._mqtt.publish(topic, payload, qos=qos, retain=retain)

    def send(
        self,
        task: str,
        input_: dict[str, Any],
        *,
        rid: str | None = None,
        route: str | None = None,
        deadline_ms: int | None = None,
    ) -> str:
        rid = rid or uuid.uuid4().hex
        body: dict[str, Any] = {"id": rid, "input": input_}
        if route is not None:
            body["route"] = route
        if deadline_ms is not None:
            body["deadline_ms"] = deadline_ms
        self.sent_at[rid] = time.monotonic()
        self._mqtt.publish(f"{self.root}/request/{task}", orjson.dumps(body), qos=1)
        return rid

    def wait_for(self, ids: list[str], timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._lock:
            while not all(i in self.answers for i in ids):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def wait_messages(self, topic_suffix: str, count: int, timeout: float) -> list[bytes]:
        end = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [p for t, p, _ in self.messages if t.endswith(topic_suffix)]
                if len(found) >= count or time.monotonic() >= end:
                    return found
                self._lock.wait(max(0.0, end - time.monotonic()))

    def latency_ms(self, rid: str) -> float | None:
        if rid in self.sent_at and rid in self.received_at:
            return (self.received_at[rid] - self.sent_at[rid]) * 1000.0
        return None
