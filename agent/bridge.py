"""Request/response for the operations a hub needs, in Zigbee2MQTT's pattern.

`<base>/<id>/bridge/request/<op>` with a JSON object (or nothing) is answered on
`<base>/<id>/bridge/response/<op>` with `{"status": "ok"|"error", "data": {...},
"error": "...", "transaction": ...}`; `transaction`, when the request has one, is echoed
so a caller can match answers to requests. Operations: `health`, `tasks`, `devices`,
`reload`. They run on one bridge thread (a reload loads models: seconds), fed by a small
bounded queue; when it is full the request is answered `busy` at once.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from agent.background import Background
from agent.devices.rules import RULES
from agent.engine import TaskRuntime
from agent.errors import EdgeAgentError, InputError
from agent.mqtt.client import Message
from agent.mqtt.topics import Topics, safe_level
from agent.wire import dumps, error_message, loads

log = logging.getLogger(__name__)

QUEUE_SIZE = 16


class Host(Protocol):
    """What the bridge asks of the agent."""

    @property
    def tasks(self) -> Mapping[str, TaskRuntime]: ...

    def health(self) -> tuple[bool, str]: ...

    def stats_snapshot(self) -> dict[str, object]: ...

    @property
    def config_path(self) -> Path | None: ...

    def device_list(self) -> list[dict[str, object]]: ...

    def reload_from_file(self) -> tuple[bool, list[str]]: ...


class Mqtt(Protocol):
    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> bool: ...

    def ack(self, message: Message) -> None: ...


def _transaction(obj: Any) -> Any:
    """The request's `transaction`, if it is a small scalar that can be echoed."""
    if not isinstance(obj, dict):
        return None
    value = obj.get("transaction")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and len(value) <= 128):
        return value
    return None


class Bridge(Background[Mqtt]):
    def __init__(self, topics: Topics, qos: int, host: Host) -> None:
        super().__init__("bridge")
        self._topics = topics
        self._qos = qos
        self._host = host
        self._queue: queue.Queue[Message] = queue.Queue(maxsize=QUEUE_SIZE)
        self._ops: dict[str, Callable[[Any], dict[str, Any]]] = {
            "health": self._health,
            "tasks": self._tasks,
            "devices": self._devices,
            "reload": self._reload,
        }

    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self._topics.bridge_request_filter, self._qos)]

    # ------------------------------------------------------------------ network thread

    def offer(self, message: Message) -> bool:
        op = self._topics.bridge_op(message.topic)
        if op is None:
            return False
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._respond(op, None, error="busy: too many bridge requests waiting")
            self._ack(message)
        return True

    # ------------------------------------------------------------------ bridge thread

    def _run(self) -> None:
        while self._running.is_set():
            try:
                message = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle(message)
            except Exception:
                log.exception("bridge request on %s failed", message.topic)
            finally:
                self._ack(message)

    def _handle(self, message: Message) -> None:
        op = self._topics.bridge_op(message.topic) or ""
        if not safe_level(op):
            self._error(message.topic, "invalid_request", "bridge operation is not a topic level")
            return
        try:
            obj: Any = loads(message.payload) if message.payload.strip() else {}
        except InputError as exc:
            self._error(message.topic, exc.code, str(exc))
            self._respond(op, None, error=f"invalid request: {exc}")
            return
        transaction = _transaction(obj)
        handler = self._ops.get(op)
        if handler is None:
            self._respond(
                op, transaction, error=f"unknown request {op!r}; known: {sorted(self._ops)}"
            )
            return
        try:
            data = handler(obj)
        except EdgeAgentError as exc:
            log.warning("bridge %s failed: %s", op, exc)
            self._respond(op, transaction, error=str(exc))
            return
        except Exception as exc:
            log.exception("bridge %s failed", op)
            self._respond(op, transaction, error=f"internal error: {type(exc).__name__}")
            return
        self._respond(op, transaction, data=data)

    def _respond(
        self,
        op: str,
        transaction: Any,
        data: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"status": "ok" if error is None else "error", "data": data or {}}
        if error is not None:
            body["error"] = error[:1024]
        if transaction is not None:
            body["transaction"] = transaction
        if self._mqtt is not None:
            self._mqtt.publish(self._topics.bridge_response(op), dumps(body), qos=self._qos)

    def _error(self, topic: str, code: str, text: str) -> None:
        if self._mqtt is not None:
            self._mqtt.publish(self._topics.error, error_message(topic, code, text), qos=self._qos)

    def _ack(self, message: Message) -> None:
        if self._mqtt is not None:
            self._mqtt.ack(message)

    # ------------------------------------------------------------------ operations

    def _health(self, _: Any) -> dict[str, Any]:
        healthy, reason = self._host.health()
        snapshot = self._host.stats_snapshot()
        keys = ("uptime_s", "mqtt_connected", "queue_depth", "inflight", "cloud_breaker")
        return {"healthy": healthy, "reason": reason, **{k: snapshot.get(k) for k in keys}}

    def _tasks(self, _: Any) -> dict[str, Any]:
        tasks: list[dict[str, Any]] = []
        for name, rt in sorted(self._host.tasks.items()):
            tasks.append(
                {
                    "name": name,
                    "kind": "model",
                    "description": rt.task.description,
                    "labels": list(rt.labels),
                    "threshold": rt.threshold,
                    "edge_model": rt.edge.name if rt.edge else None,
                    "edge_version": rt.edge.version if rt.edge else None,
                    "cloud_model": rt.cloud_model,
                }
            )
        for name, rule in sorted(RULES.items()):
            tasks.append(
                {
                    "name": name,
                    "kind": "rule",
                    "labels": list(rule.labels),
                    "model": rule.model,
                    "model_version": rule.version,
                }
            )
        return {"tasks": tasks}

    def _devices(self, _: Any) -> dict[str, Any]:
        return {"devices": self._host.device_list()}

    def _reload(self, _: Any) -> dict[str, Any]:
        """Like SIGHUP: re-read the config file and the models (`Agent.reload`)."""
        if self._host.config_path is None:
            raise EdgeAgentError("the agent was started without a configuration file")
        ok, notes = self._host.reload_from_file()
        if not ok:
            raise EdgeAgentError("; ".join(notes))
        return {
            "config": str(self._host.config_path),
            "tasks": sorted(self._host.tasks),
            "devices": [d["id"] for d in self._host.device_list()],
            "restart_required": [n.split(" ", 1)[0] for n in notes if "restart" in n],
            "notes": notes,
        }
