"""The daemon: load and check everything, connect, serve, stop cleanly."""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from agent.bridge import Bridge
from agent.cloud.client import CloudClient
from agent.config import Config, load_config
from agent.dedupe import Dedupe
from agent.devices.hub import DeviceHub
from agent.engine import Engine, TaskRuntime, serves_inline
from agent.errors import EdgeAgentError, ModelLoadError, MqttAuthError, MqttError
from agent.metrics import Gauges, serve_metrics
from agent.mqtt.client import Message, MqttClient, Will
from agent.mqtt.ledger import SessionLedger
from agent.mqtt.topics import Topics
from agent.outbox import Outbox
from agent.registry import LoadedModel, Registry
from agent.runtime.tflite import runtime_name
from agent.service.notify import Notifier
from agent.service.serving import ServingProcesses, SessionCleanup
from agent.service.watchdog import WatchdogLoop
from agent.stats import Stats
from agent.tasks import TASKS
from agent.vision.service import CameraService
from agent.wire import dumps

log = logging.getLogger(__name__)

EX_CONFIG = 78  # sysexits.h: fix the config or credentials; systemd does not restart on it


def build_tasks(config: Config, registry: Registry) -> dict[str, TaskRuntime]:
    """The served tasks, with their model specs verified (hash) but not yet loaded."""
    runtimes: dict[str, TaskRuntime] = {}
    for name, task_config in config.tasks.items():
        if not task_config.enabled:
            continue
        task = TASKS[name]
        models = task.resolve_models(registry, config, task_config)
        edge = models.edge if task_config.local else None
        if edge is not None and config.models.verify_hashes:
            edge.verify()
        cloud_model = None
        if task_config.cloud and config.cloud.url:
            cloud_model = task_config.cloud_model or name
        if edge is None and cloud_model is None:
            raise ModelLoadError(
                str(registry.directory), f"task {name} has neither a local model nor a cloud"
            )
        threshold = task_config.threshold
        runtimes[name] = TaskRuntime(
            task=task.bind(models, config),
            config=task_config,
            labels=models.labels,
            threshold=models.entry.threshold if threshold is None else threshold,
            edge=edge,
            cloud_model=cloud_model,
            privacy=config.vision.request_privacy if task.image_input else None,
        )
    return runtimes


def load_worker_models(
    config: Config, tasks: dict[str, TaskRuntime]
) -> list[dict[str, LoadedModel]]:
    """One interpreter per task per worker (interpreters are not thread-safe)."""
    return [_load_models(config, tasks) for _ in range(config.workers.count)]


def load_inline_models(
    config: Config, tasks: dict[str, TaskRuntime]
) -> dict[str, LoadedModel] | None:
    """The network thread's own interpreters (`workers.inline`), for the tasks it serves."""
    if not config.workers.inline:
        return None
    return _load_models(config, {n: rt for n, rt in tasks.items() if serves_inline(rt)})


def _load_models(config: Config, tasks: dict[str, TaskRuntime]) -> dict[str, LoadedModel]:
    return {
        name: rt.edge.load(config.models.num_threads)
        for name, rt in tasks.items()
        if rt.edge is not None
    }


def open_delivery_state(
    config: Config, suffix: str = ""
) -> tuple[Outbox | None, Dedupe[Message] | None]:
    """The outbox and the de-duplication window: one SQLite file under the state directory
    (docs/reliability.md), so an answer and its id are stored the same way."""
    dc = config.dedupe
    state_db = None
    if config.outbox.enabled or (dc.enabled and dc.persist):
        oc = config.outbox
        state_db = Outbox(
            config.resolved_state_dir() / f"outbox-{config.id}{suffix}.sqlite3",
            durability=oc.durability,
            max_messages=oc.max_messages,
            max_bytes=oc.max_bytes,
            max_age_s=oc.max_age_s,
            drop_policy=oc.drop_policy,
        ).start()
    dedupe: Dedupe[Message] | None = None
    if dc.enabled:
        store = state_db if dc.persist else None
        dedupe = Dedupe(store, max_entries=dc.max_entries, window_s=dc.window_s)
    return state_db, dedupe


def serving_only(config: Config) -> Config:
    """The configuration of an extra serving process (agent/service/serving.py): requests
    only; devices, cameras, Home Assistant and metrics stay with the main process."""
    return config.model_copy(
        update={
            "devices": [],
            "cameras": {},
            "homeassistant": config.homeassistant.model_copy(update={"enabled": False}),
            "metrics": config.metrics.model_copy(update={"port": None}),
        }
    )


class Agent:
    def __init__(
        self,
        config: Config,
        notifier: Notifier | None = None,
        config_path: Path | None = None,
        process_index: int = 0,
    ) -> None:
        # 0: the agent; N > 0: its Nth extra serving process (`workers.processes`)
        self.process_index = process_index
        self.serving_only = process_index > 0
        if self.serving_only:
            config = serving_only(config)
        self.config = config
        self.config_path = config_path
        self._reload_requested = threading.Event()
        self._reload_lock = threading.Lock()
        share = None
        if config.workers.processes > 1 and not config.scale_out.group:
            share = f"{config.id}-serve"
        self.topics = Topics(config.base_topic, config.id, config.scale_out.group, share)
        self._request_prefix = self.topics.request("")
        self.stats = Stats()
        self.notifier = notifier or Notifier()
        self._stop = threading.Event()
        self._stopped = False
        registry = Registry(config.models.dir)
        self.tasks = build_tasks(config, registry)
        worker_models = load_worker_models(config, self.tasks)
        log.info(
            "TFLite runtime: %s; tasks: %s",
            runtime_name(),
            ", ".join(
                f"{n} (edge={rt.edge.name if rt.edge else None}, cloud={rt.cloud_model}, "
                f"threshold={rt.threshold:.3f})"
                for n, rt in self.tasks.items()
            ),
        )
        token = config.cloud.token()
        self.cloud = (
            CloudClient(config.cloud, token.get_secret_value() if token else None)
            if config.cloud.url
            else None
        )
        self.devices = DeviceHub(
            config, self.topics, self.stats, engine=lambda: self.engine, tasks=lambda: self.tasks
        )
        self.bridge = Bridge(self.topics, config.mqtt.qos, self)
        suffix = f"-p{process_index}" if self.serving_only else ""
        self.state_db, self.dedupe = open_delivery_state(config, suffix)
        self.mqtt = self._mqtt_client(config, suffix)
        self.engine = Engine(
            config,
            self.topics,
            self.mqtt,
            self.stats,
            self.tasks,
            worker_models,
            self.cloud,
            dedupe=self.dedupe,
            inline_models=load_inline_models(config, self.tasks),
        )
        self.devices.attach(self.mqtt)
        self.bridge.attach(self.mqtt)
        self.cameras: CameraService | None = None
        if config.cameras:
            self.cameras = CameraService(config, self.topics, self.mqtt, self.cloud, registry)
            for topic, qos in self.cameras.subscriptions():
                self.mqtt.subscribe(topic, qos)
        self._watchdog: WatchdogLoop | None = None
        self.serving: ServingProcesses | None = None
        if config.workers.processes > 1 and not self.serving_only:
            self.serving = ServingProcesses(config.workers.processes - 1, config_path)
        self._metrics_server: Any = None
        # an extra serving process reports its own counters under `<root>/stats/p<N>`
        self._stats_topic = self.topics.stats + (f"/p{process_index}" if process_index else "")
        self._stats_thread = threading.Thread(target=self._stats_loop, name="stats", daemon=True)

    def _mqtt_client(self, config: Config, suffix: str) -> MqttClient:
        password = config.mqtt.password()
        secret = password.get_secret_value() if password else None
        mqtt_config = config.mqtt
        if config.scale_out.group:
            expiry = config.scale_out.session_expiry_s
            mqtt_config = mqtt_config.model_copy(update={"session_expiry_s": expiry})
        subscriptions: list[tuple[str, int]] = [
            (f, config.mqtt.qos) for f in self.topics.request_subscriptions(list(self.tasks))
        ]
        if not self.serving_only:
            subscriptions += self.devices.subscriptions() + self.bridge.subscriptions()
        # a persistent session outlives this run: record its filters (agent/mqtt/ledger.py)
        persistent = mqtt_config.protocol == "3.1.1" or mqtt_config.session_expiry_s > 0
        state_dir = config.resolved_state_dir()
        self._session_cleanup: SessionCleanup | None = None
        if persistent and not self.serving_only:
            self._session_cleanup = SessionCleanup(
                mqtt_config, secret, state_dir, config.client_id, config.workers.processes
            )
        client_id = f"{config.client_id}{suffix}"
        return MqttClient(
            mqtt_config,
            client_id,
            will=None if self.serving_only else Will(self.topics.status, b"offline"),
            subscriptions=subscriptions,
            on_message=self._on_message,
            on_connected=self._on_connected,
            password=secret,
            max_inflight=config.mqtt.max_inflight,
            receive_maximum=config.workers.queue_size,
            outbox=self.state_db if config.outbox.enabled else None,
            on_read_done=self._on_read_done,
            ledger=SessionLedger(state_dir, client_id) if persistent else None,
        )

    # ------------------------------------------------------------------ callbacks

    def _on_connected(self, session_present: bool) -> None:
        if self.serving_only:
            return
        self.mqtt.publish(self.topics.status, b"online", qos=1, retain=True)
        if self.cameras is not None:
            self.cameras.on_connected()
        self.devices.on_connected()

    def _on_read_done(self) -> None:
        self.engine.flush()

    def _on_message(self, message: Message) -> None:
        if message.topic.startswith(self._request_prefix):  # the hot path first
            self.engine.submit(message)
            return
        if self.cameras is not None and self.cameras.offer(message):
            return
        if self.bridge.offer(message) or self.devices.offer(message):
            return
        self.engine.submit(message)

    # ------------------------------------------------------------------ health and stats

    def health(self) -> tuple[bool, str]:
        if not self.mqtt.alive():
            return False, "MQTT network thread is not running"
        return self.engine.healthy(stall_s=self.config.workers.stall_timeout_s)

    def stats_snapshot(self) -> dict[str, object]:
        breaker = self.cloud.breaker.state if self.cloud else None
        return self.stats.snapshot(
            queue_depth=self.engine.queue_depth,
            inflight=self.engine.inflight,
            mqtt_connected=self.mqtt.connected,
            cloud_breaker=breaker,
            **({"cameras": self.cameras.snapshot()} if self.cameras is not None else {}),
            delivery=self.delivery_stats(),
        )

    def delivery_stats(self) -> dict[str, object]:
        """Outbox, de-duplication and drop counters (docs/reliability.md)."""
        counters = self.stats.counters
        names = ("duplicates_dropped", "duplicates_replayed", "spilled_to_cloud")
        return {
            **{name: counters[name] for name in (*names, "answers_refused")},
            "stale_acks": self.mqtt.stale_acks,
            "dropped_offline": self.mqtt.dropped_offline,
            "outbox_backlog": self.mqtt.outbox_backlog(),
            **({"outbox": db.stats()} if (db := self.state_db) is not None else {}),
            **({"dedupe": self.dedupe.stats()} if self.dedupe is not None else {}),
        }

    def device_list(self) -> list[dict[str, object]]:
        return self.devices.describe()

    def metrics_gauges(self) -> Gauges:
        cloud = self.cloud
        return Gauges(
            queue_depth=self.engine.queue_depth,
            inflight=self.engine.inflight,
            mqtt_connected=self.mqtt.connected,
            cloud_breaker=cloud.breaker.state if cloud else None,
            cloud_successes=cloud.successes if cloud else 0,
            cloud_failures=cloud.failures if cloud else 0,
            cloud_breaker_opened=cloud.breaker.opened_count if cloud else 0,
            uptime_s=time.monotonic() - self.stats.started,
        )

    def _stats_loop(self) -> None:
        while not self._stop.wait(self.config.stats.interval_s):
            if self.mqtt.connected:
                self.mqtt.publish(
                    self._stats_topic, dumps(self.stats_snapshot()), qos=0, retain=True
                )

    # ------------------------------------------------------------------ lifecycle

    def start(self, connect_timeout: float = 30.0) -> None:
        if self.config.metrics.port is not None:
            self._metrics_server = serve_metrics(
                self.config.metrics.host, self.config.metrics.port, self.stats, self.metrics_gauges
            )
        self.engine.start()
        if not self.serving_only:
            self.devices.start()
            self.bridge.start()
        self.mqtt.start()
        if self.cameras is not None:  # not after the connection: events wait in the outbox
            self.cameras.start()
        deadline = time.monotonic() + connect_timeout
        while not self.mqtt.wait_connected(0.2):
            if self.mqtt.fatal is not None:
                raise self.mqtt.fatal
            if time.monotonic() > deadline:
                log.warning("not connected to the broker yet; still trying in the background")
                break
        self._stats_thread.start()
        if self.serving is not None:
            self.serving.start()
        if self._session_cleanup is not None:
            self._session_cleanup.start(self.mqtt.wait_connected, self._stop)
        # Everything loaded so far (modules, models, config) lives as long as the process:
        # keep it out of the collector's full passes, which would otherwise walk it again
        # and again and show up as millisecond pauses in the latency tail.
        gc.collect()
        gc.freeze()
        self.notifier.ready(self._status_text())
        self._watchdog = WatchdogLoop(self.notifier, self.health)
        self._watchdog.start()

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or a fatal MQTT error). Returns the exit code."""
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        signal.signal(signal.SIGHUP, self._sighup)
        try:
            self.start()
        except MqttError as exc:
            log.error("%s", exc)
            self.shutdown()
            return EX_CONFIG if isinstance(exc, MqttAuthError) else 1
        while not self._stop.wait(0.2):
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self.reload_from_file()
            if self.mqtt.fatal is not None:
                log.error("%s", self.mqtt.fatal)
                self.shutdown()
                return EX_CONFIG if isinstance(self.mqtt.fatal, MqttAuthError) else 1
        self.shutdown()
        return 0

    def _sighup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_requested.set()
        if self.serving is not None:
            self.serving.forward(signal.SIGHUP)

    def reload_from_file(self) -> tuple[bool, list[str]]:
        """SIGHUP: re-read the config file and the models, telling systemd (RELOADING=1)."""
        self.notifier.reloading("reloading configuration and models")
        try:
            config = load_config(self.config_path)
            ok, notes = True, self.reload(config)
        except EdgeAgentError as exc:
            ok, notes = False, [str(exc)]
            log.error("reload failed, still serving the previous configuration: %s", exc)
        self.notifier.ready(self._status_text())
        return ok, notes

    def reload(self, config: Config) -> list[str]:
        """Apply a new configuration without dropping messages: tasks, thresholds and models
        are swapped between batches. Returns notes on what needs a restart instead.
        Raises EdgeAgentError (and keeps serving the old one) if the new one cannot load."""
        if self.serving_only:
            config = serving_only(config)
        with self._reload_lock:  # SIGHUP and the bridge's `reload` may overlap
            return self._reload(config)

    def _reload(self, config: Config) -> list[str]:
        notes = [
            f"{section} changed: restart to apply"
            for section in (
                "id",
                "base_topic",
                "mqtt",
                "cloud",
                "workers",
                "limits",
                "metrics",
                "cameras",
                "vision",
                "scale_out",
            )
            if getattr(config, section) != getattr(self.config, section)
        ]
        tasks = build_tasks(config, Registry(config.models.dir))
        worker_models = load_worker_models(self.config, tasks)
        self.engine.replace_tasks(tasks, worker_models, load_inline_models(self.config, tasks))
        if self.topics.group:  # shared subscriptions are per task: join the new tasks' shares
            added = [t for t in tasks if t not in self.tasks]
            for topic in self.topics.request_subscriptions(added):
                self.mqtt.subscribe(topic, self.config.mqtt.qos)
        self.tasks = tasks
        self.config = self.config.model_copy(
            update={
                "tasks": config.tasks,
                "models": config.models,
                "stats": config.stats,
                "log_level": config.log_level,
                "devices": config.devices,
                "device_profiles": config.device_profiles,
                "homeassistant": config.homeassistant,
            }
        )
        self.devices.reconfigure(self.config)
        logging.getLogger().setLevel(config.log_level)
        log.info("reloaded: tasks %s%s", ", ".join(tasks), f"; {'; '.join(notes)}" if notes else "")
        return notes

    def _status_text(self) -> str:
        return f"serving {', '.join(self.tasks)} on {self.topics.root}"

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self._stop.set()

    def shutdown(self, drain_s: float = 1.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self.notifier.stopping()
        if self.serving is not None:
            self.serving.terminate()  # they drain and stop alongside this process
        if self._watchdog is not None:
            self._watchdog.stop()
        if self.cameras is not None:
            self.cameras.stop()  # open person events end while MQTT is still up
        self.bridge.stop()
        self.devices.stop()
        self.engine.stop(drain_s)
        self.mqtt.stop(final=(self.topics.status, b"stopped"), timeout=0.8)
        if self.state_db is not None:
            self.state_db.close()  # commits results still pending for the outbox
        if self.cloud is not None:
            self.cloud.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        if self.serving is not None:
            self.serving.wait(3.0)
        log.info("stopped")
