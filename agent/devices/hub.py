"""The device hub: sensor messages in, device results and Home Assistant entities out.

paho's network thread only hands messages over (`offer`) to a bounded queue (full: it waits
up to OFFER_WAIT_S for room, then the message is shed, acknowledged and counted). One hub
thread takes them in arrival order, which keeps each device's readings in order: it parses,
checks and windows them (`agent/devices/device.py`), evaluates rule tasks itself, and hands
model windows to the engine's workers (`Engine.submit_internal`), whose answer comes back on
a worker thread and is published, retained, on `<base>/<id>/<device>/<task>`: in window
order per device and task, whichever window the engine answers first
(`agent/devices/ordering.py`), so the retained topic ends on the newest window and an
outage's outbox replays them in order. Every invalid message gets one message on the error
topic and changes nothing. The same thread marks devices unavailable, publishes the
discovery configs and re-announces them when Home Assistant comes online.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol

from agent.background import Background
from agent.config import Config
from agent.devices.bindings import BINDINGS
from agent.devices.checks import profiles_dir
from agent.devices.device import Device, Job
from agent.devices.ordering import ResultOrder
from agent.devices.profiles import Profile, load_profiles
from agent.devices.rules import RULES
from agent.devices.topicmatch import matches
from agent.engine import TaskRuntime
from agent.errors import InputError
from agent.hass.announcer import Announcer
from agent.hass.discovery import NodeConfig, agent_node, device_node
from agent.mqtt.client import Message
from agent.mqtt.topics import Topics
from agent.stats import Stats
from agent.tasks.base import FloatArray
from agent.wire import dumps, error_message

log = logging.getLogger(__name__)


class Mqtt(Protocol):
    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> bool: ...

    def ack(self, message: Message) -> None: ...

    def subscribe(self, topic: str, qos: int) -> None: ...


class InternalEngine(Protocol):
    def submit_internal(
        self,
        task: str,
        canonical: FloatArray,
        on_answer: Callable[[dict[str, Any]], None],
        *,
        rid: str,
    ) -> bool: ...


OFFER_WAIT_S = 1.0  # longest the network thread waits for room in the hub's queue


class DeviceHub(Background[Mqtt]):
    def __init__(
        self,
        config: Config,
        topics: Topics,
        stats: Stats,
        engine: Callable[[], InternalEngine],
        tasks: Callable[[], Mapping[str, TaskRuntime]],
    ) -> None:
        super().__init__("devices")
        self._config = config
        self._topics = topics
        self._stats = stats
        self._engine = engine
        self._tasks = tasks
        self._queue: queue.Queue[Message] = queue.Queue(maxsize=config.workers.queue_size)
        self._lock = threading.RLock()  # the hub's state; held by the hub thread per message
        self._count_lock = threading.Lock()
        self._devices: dict[str, Device] = {}
        self._claimed: tuple[str, ...] = ()  # every filter subscribed so far (offer reads it)
        self._subscriptions: list[tuple[str, int]] = []
        self._announcer = Announcer(
            self._publish_retained, config.id, topics.root, {topics.status, topics.stats}
        )
        self._connected = False
        self._announce_at: float | None = None
        self._seq = itertools.count(1)
        self._order: dict[tuple[str, str], ResultOrder] = {}  # per device and task
        self._last_shed_log = 0.0
        self._apply(config)

    # ------------------------------------------------------------------ wiring

    def subscriptions(self) -> list[tuple[str, int]]:
        """Topics to subscribe to when the MQTT client is built."""
        return list(self._subscriptions)

    # ------------------------------------------------------------------ network thread

    def offer(self, message: Message) -> bool:
        """Take a message meant for the hub (True), or leave it to the caller (False)."""
        if not any(matches(f, message.topic) for f in self._claimed):
            return False
        try:
            # A burst (a broker replaying a fleet's queued readings, say) waits for the hub:
            # the network thread stops reading meanwhile, which is TCP backpressure on the
            # broker. Only a hub stuck for OFFER_WAIT_S sheds messages.
            self._queue.put(message, timeout=OFFER_WAIT_S)
        except queue.Full:
            self._stats.inc("device_messages_shed")
            now = time.monotonic()
            if now - self._last_shed_log > 10:
                self._last_shed_log = now
                log.warning("device queue full: shedding device messages")
            if self._mqtt is not None:
                self._mqtt.ack(message)
        return True

    def on_connected(self) -> None:
        """Re-publish availability and discovery on every (re)connection."""
        self._connected = True

    # ------------------------------------------------------------------ other threads

    def reconfigure(self, config: Config) -> None:
        """Apply a new configuration (bridge `reload`); windows of unchanged devices stay."""
        with self._lock:
            self._config = config
            self._apply(config)
            self._announce_at = time.monotonic()

    def describe(self) -> list[dict[str, object]]:
        with self._lock:
            return [d.describe() for d in self._devices.values()]

    @property
    def announcer(self) -> Announcer:
        return self._announcer

    # ------------------------------------------------------------------ configuration

    def _apply(self, config: Config) -> None:
        profiles: dict[str, Profile] = (
            load_profiles(profiles_dir(config.device_profiles)) if config.devices else {}
        )
        limit = config.limits.max_payload_bytes
        devices: dict[str, Device] = {}
        for dc in config.devices:
            old = self._devices.get(dc.id)
            profile = profiles[dc.profile]
            if (
                old is not None
                and old.config == dc
                and old.profile == profile
                and old.parser.max_bytes == limit
            ):
                devices[dc.id] = old
            else:
                bindings = [BINDINGS[t] for t in dc.tasks]
                devices[dc.id] = Device(dc, profile, bindings, limit, self._convert_image)
        for gone in set(self._devices) - set(devices):
            self._forget(self._devices[gone])
        self._devices = devices
        qos = config.mqtt.qos
        wanted = [(d.topic, qos) for d in devices.values()]
        ha = config.homeassistant
        if ha.enabled:
            discovery = f"{ha.discovery_prefix}/device/+/config"
            wanted += [(ha.status_topic, qos), (discovery, qos)]
        for topic, q in wanted:
            if topic not in self._claimed:
                self._claimed = (*self._claimed, topic)
                self._subscriptions.append((topic, q))
                if self._mqtt is not None:
                    self._mqtt.subscribe(topic, q)
        self._announcer.update(ha.discovery_prefix if ha.enabled else None, self._nodes())

    def _nodes(self) -> list[NodeConfig]:
        prefix = self._config.homeassistant.discovery_prefix
        qos = self._config.mqtt.qos
        served = self._tasks()
        nodes = [agent_node(prefix, self._topics, qos)]
        for device in self._devices.values():
            tasks = []
            for binding in device.bindings:
                runtime = served.get(binding.task)
                rule = RULES.get(binding.task)
                labels = rule.labels if rule else (runtime.labels if runtime else ())
                tasks.append((binding, labels))
            nodes.append(
                device_node(prefix, self._topics, qos, device.config, device.profile, tasks)
            )
        return nodes

    def _forget(self, device: Device) -> None:
        """A device taken out of the configuration: clear its retained topics."""
        log.info("device %s removed", device.id)
        for key in [k for k in self._order if k[0] == device.id]:
            del self._order[key]  # answers still due go out through the stream they hold
        self._publish_retained(self._topics.device_availability(device.id), b"")
        for binding in device.bindings:
            self._publish_retained(self._topics.device_result(device.id, binding.task), b"")

    # ------------------------------------------------------------------ hub thread

    def _run(self) -> None:
        while self._running.is_set():
            try:
                message: Message | None = self._queue.get(timeout=0.2)
            except queue.Empty:
                message = None
            with self._lock:
                try:
                    if message is not None:
                        self._handle(message)
                    self._tick()
                except Exception:  # never let one message stop the hub
                    log.exception("device hub failed on %s", message.topic if message else "tick")
            if message is not None and self._mqtt is not None:
                self._mqtt.ack(message)

    def _handle(self, message: Message) -> None:
        ha = self._config.homeassistant
        topic = message.topic
        if ha.enabled and topic == ha.status_topic:
            if message.payload.strip().lower() == b"online":
                delay = random.uniform(0, ha.announce_jitter_s)
                log.info("Home Assistant is online: re-announcing in %.1fs", delay)
                self._announce_at = time.monotonic() + delay
            return
        if ha.enabled and matches(f"{ha.discovery_prefix}/device/+/config", topic):
            if message.retain:
                self._announcer.on_retained(topic, message.payload)
            return
        targets = [d for d in self._devices.values() if matches(d.topic, topic)]
        if not targets:
            log.debug("message on %s: no device uses this topic any more", topic)
            return
        if message.retain:
            # Sent because we subscribed, not because the device just spoke: an old state.
            self._stats.inc("device_retained_ignored")
            return
        for device in targets:
            self._ingest(device, message)

    def _ingest(self, device: Device, message: Message) -> None:
        self._stats.inc("messages_in")
        self._stats.inc("device_messages")
        try:
            jobs = device.ingest(message.topic, message.payload, time.time())
        except InputError as exc:
            device.errors += 1
            self._report(message.topic, exc.code, f"device {device.id}: {exc}")
            return
        if not device.available:
            device.available = True
            log.info("device %s is available", device.id)
            self._publish_retained(self._topics.device_availability(device.id), b"online")
        for job in jobs:
            self._run_job(device, job)

    def _run_job(self, device: Device, job: Job) -> None:
        binding = BINDINGS[job.task]
        rid = f"{device.id}-{job.task}-{next(self._seq)}"
        order = self._order.get((device.id, job.task))
        if order is None:
            order = self._order[(device.id, job.task)] = ResultOrder()
        answered = partial(self._answered, device, job, order, order.ticket(time.monotonic()))
        rule = RULES.get(job.task)
        if rule is not None:
            started = time.monotonic()
            label, reading = rule.evaluate(job.values)
            top = [{"label": label, "score": 1.0}]
            payload = {
                "id": rid,
                "task": job.task,
                "ok": True,
                "result": {"label": label, "score": 1.0, "top": top},
                "source": "rule",
                "model": rule.model,
                "model_version": rule.version,
                "latency_ms": round((time.monotonic() - started) * 1000.0, 3),
                "degraded": False,
                "reading": reading,
            }
            answered(payload)
            return
        canonical = job.values if binding.kind == "image" else binding.canonical(job.values)
        submitted = self._engine().submit_internal(job.task, canonical, answered, rid=rid)
        if not submitted:
            answered(None)
            self._report(
                job.source_topic, "overloaded", f"device {device.id}: {job.task} window dropped"
            )

    def _convert_image(self, task: str, image: str) -> FloatArray:
        """An image reading -> the task's canonical sample (on the hub thread)."""
        runtime = self._tasks().get(task)
        if runtime is None:
            raise InputError("unknown_task", f"task {task} is not served")
        return runtime.task.parse_input({"image": image}, self._config.limits)

    def _tick(self) -> None:
        now = time.monotonic()
        # The engine answers each window by its deadline; this only guards against a bug.
        wait_s = self._config.limits.default_deadline_ms / 1000.0 + 30.0
        for (device_id, task), order in self._order.items():
            given_up = order.expire(now, wait_s)
            if given_up:
                self._stats.inc("device_results_unordered", given_up)
                log.warning(
                    "device %s, task %s: no answer for %d window(s) after %.0fs; "
                    "publishing the later ones",
                    device_id,
                    task,
                    given_up,
                    wait_s,
                )
        for device in self._devices.values():
            seen = device.last_seen
            if device.available and seen is not None and now - seen > device.unavailable_after_s:
                device.available = False
                log.info("device %s is unavailable (silent for %.0fs)", device.id, now - seen)
                self._publish_retained(self._topics.device_availability(device.id), b"offline")
        if self._connected:
            self._connected = False
            for device in self._devices.values():
                state = b"online" if device.available else b"offline"
                self._publish_retained(self._topics.device_availability(device.id), state)
            self._announce_at = now
        if self._announce_at is not None and now >= self._announce_at:
            self._announce_at = None
            if self._config.homeassistant.enabled:
                self._announcer.announce()

    # ------------------------------------------------------------------ any thread

    def _answered(
        self,
        device: Device,
        job: Job,
        order: ResultOrder,
        ticket: int,
        payload: dict[str, Any] | None,
    ) -> None:
        """An answer for a window (a worker, cloud or timer thread for model tasks; None:
        the engine had no room for it), published once the earlier windows' are."""
        if payload is None:
            order.release(ticket, None)
            return
        if not payload.get("ok"):
            order.release(ticket, None)
            error = payload.get("error") or {}
            self._report(
                job.source_topic,
                str(error.get("code", "error")),
                f"device {device.id}, task {job.task}: {error.get('message', '')}",
            )
            return
        out = dict(payload)
        out["device"] = device.id
        out["ts"] = round(job.end, 3)
        out["window"] = {
            "start": round(job.start, 3),
            "end": round(job.end, 3),
            "samples": job.samples,
        }
        order.release(ticket, partial(self._publish_result, device, job.task, dumps(out)))

    def _publish_result(self, device: Device, task: str, body: bytes) -> None:
        with self._count_lock:
            device.results += 1
        self._stats.inc("device_results")
        self._stats.inc("messages_out")
        self._publish_retained(self._topics.device_result(device.id, task), body)

    def _report(self, topic: str, code: str, text: str) -> None:
        log.debug("device message on %s rejected: %s %s", topic, code, text)
        self._stats.error(code)
        self._stats.inc("messages_out")
        if self._mqtt is not None:
            self._mqtt.publish(
                self._topics.error, error_message(topic, code, text), qos=self._config.mqtt.qos
            )

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        if self._mqtt is not None:
            self._mqtt.publish(topic, payload, qos=1, retain=True)
