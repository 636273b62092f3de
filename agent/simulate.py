"""`edge-agent simulate`: the configured devices, publishing in their profiles' real formats
and replaying real data: held-out ACS-F1 power traces on plugs, held-out BasicMotions
recordings on wearables, held-out scikit-learn digits drawn as tablet images, and plausible
classroom climate (CO2 rising with a class in the room, falling when the windows open).

Time is compressed so the demo moves: by default each device fills one window of its task
in `window_s` seconds (a plug's 1460 samples at 10 s are four hours of real time), and
one-shot devices (tablets, climate) publish every `event_interval_s` seconds; `speed` sets
one factor for all instead. Timestamps in the payloads are simulated time, so the agent
sees a plug sampled every 10 s however fast it is replayed.
"""

from __future__ import annotations

import base64
import heapq
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import Config
from agent.devices.bindings import BINDINGS
from agent.devices.checks import profiles_dir
from agent.devices.config import DeviceConfig
from agent.devices.profiles import load_profiles
from agent.devices.render import Renderer, Values
from agent.errors import EdgeAgentError
from agent.imaging import encode_png
from agent.mqtt.client import Message, MqttClient
from agent.registry import Registry, load_testset

log = logging.getLogger(__name__)

# (simulated epoch seconds, values, a note printed when a new recording starts or None)
Sample = tuple[float, Values, str | None]
CLIMATE_PERIOD_S = 60.0  # a climate sensor's reading every minute of simulated time
IMU_BATCH = 10  # samples per wearable message (1 s at 10 Hz)
Data = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], tuple[str, ...]]  # x, y, labels


class SimulationError(EdgeAgentError):
    """The simulation cannot run (no data for a device's task, ...)."""


@dataclass(frozen=True)
class Options:
    window_s: float = 10.0
    event_interval_s: float = 2.0
    speed: float | None = None
    count: int | None = None  # windows (or one-shot messages) per device; None: forever
    devices: tuple[str, ...] = ()  # only these; empty: all
    seed: int = 0
    qos: int = 1


def _testset(models: Path, task: str) -> Data:
    try:
        entry = Registry(models).task(task)
    except EdgeAgentError as exc:
        raise SimulationError(f"no models for task {task} in {models}: {exc}") from None
    if entry.testset is None or not entry.testset.is_file():
        raise SimulationError(
            f"no held-out data for task {task} ({entry.testset}): train it with models/train.py"
        )
    x, y = load_testset(entry.testset)
    return x, y, entry.labels


def _plug(data: Data, start: float, rng: random.Random) -> Iterator[Sample]:
    x, y, labels = data
    period = BINDINGS["appliance"].period_s or 10.0
    t = start
    for i in _order(len(x), rng):
        note = f"ACS-F1 test trace {i} ({labels[int(y[i])]})"
        # UCR's traces are z-normalised: shift and scale to a positive wattage. The model
        # z-normalises each trace first, so it sees the original trace.
        z = x[i].astype(np.float64)
        watts = 5.0 + 50.0 * (z - z.min())
        for j, w in enumerate(watts):
            yield t, {"power": round(float(w), 2)}, note if j == 0 else None
            t += period


def _wearable(data: Data, start: float, rng: random.Random) -> Iterator[Sample]:
    x, y, labels = data
    period = BINDINGS["activity"].period_s or 0.1
    t = start
    for i in _order(len(x), rng):
        note = f"BasicMotions test recording {i} ({labels[int(y[i])]})"
        series = x[i]  # [100, 6]: accel xyz, gyro xyz
        for j in range(0, len(series), IMU_BATCH):
            batch = np.round(series[j : j + IMU_BATCH].astype(np.float64), 4)
            values = {
                "accel": batch[:, :3].tolist(),
                "gyro": batch[:, 3:].tolist(),
                "rate_hz": round(1.0 / period, 6),
            }
            yield t, values, note if j == 0 else None
            t += len(batch) * period


def digit_png(grid: np.ndarray[Any, Any]) -> str:
    """A held-out 8x8 digit as a tablet would send it: dark ink on white, 32x32 PNG."""
    ink = np.kron(grid.astype(np.float64), np.ones((4, 4))) * (255.0 / 16.0)
    return base64.b64encode(encode_png((255 - ink).astype(np.uint8))).decode()


def _tablet(data: Data, start: float, rng: random.Random) -> Iterator[Sample]:
    x, y, labels = data
    t = start
    for i in _order(len(x), rng):
        yield t, {"image": digit_png(x[i])}, f"digit {i} ({labels[int(y[i])]})"
        t += CLIMATE_PERIOD_S


def _climate(start: float, rng: random.Random) -> Iterator[Sample]:
    """A classroom: 25 people add about 25 ppm CO2 a minute to a closed room, opening the
    windows brings it back towards the outdoor 420 ppm; temperature follows loosely."""
    co2, temp, hum, t = 480.0, 20.5, 42.0, start
    minute = 0
    while True:
        lesson = minute % 90  # 45 minutes closed, windows open at 45, break, next lesson
        if lesson < 45:
            co2 += rng.gauss(25.0, 6.0)
            temp += 0.02
            hum += 0.05
        else:
            co2 += (420.0 - co2) * 0.25 + rng.gauss(0.0, 5.0)
            temp += (19.5 - temp) * 0.1
            hum += (40.0 - hum) * 0.1
        co2 = min(max(co2, 400.0), 5000.0)
        values = {
            "co2": round(co2),
            "temperature": round(temp + rng.gauss(0, 0.05), 2),
            "humidity": round(hum + rng.gauss(0, 0.2), 1),
        }
        yield t, values, "lesson starts, windows closed" if lesson == 0 else None
        minute += 1
        t += CLIMATE_PERIOD_S


def _order(n: int, rng: random.Random) -> Iterator[int]:
    while True:
        order = list(range(n))
        rng.shuffle(order)
        yield from order


class DeviceStream:
    """One simulated device: its samples, rendered and spaced out in wall-clock time."""

    def __init__(self, device: DeviceConfig, renderer: Renderer, models: Path, opts: Options):
        self.device = device
        self.renderer = renderer
        rng = random.Random(f"{opts.seed}-{device.id}")
        start = time.time()
        task = device.tasks[0]
        binding = BINDINGS[task]
        replay = {"appliance": _plug, "activity": _wearable, "digits": _tablet}.get(task)
        self.samples = (
            replay(_testset(models, task), start, rng) if replay else _climate(start, rng)
        )
        if binding.kind == "series" and binding.period_s:
            span = binding.length * binding.period_s
            per_message = IMU_BATCH if task == "activity" else 1
            self.speed = opts.speed or span / opts.window_s
            self.messages_per_unit = binding.length // per_message
        else:
            self.speed = opts.speed or CLIMATE_PERIOD_S / opts.event_interval_s
            self.messages_per_unit = 1
        self.limit = None if opts.count is None else opts.count * self.messages_per_unit
        self.sent = 0
        self.sim_start = start
        self.wall_start = time.monotonic()

    def next(self) -> tuple[float, list[tuple[str, bytes]], str | None] | None:
        """(wall time due, messages, note) of the next sample, or None when done."""
        if self.limit is not None and self.sent >= self.limit:
            return None
        ts, values, note = next(self.samples)
        self.sent += 1
        due = self.wall_start + (ts - self.sim_start) / self.speed
        return due, self.renderer.render(ts, values), note


def build_streams(config: Config, opts: Options) -> list[DeviceStream]:
    profiles = load_profiles(profiles_dir(config.device_profiles))
    unknown = set(opts.devices) - {d.id for d in config.devices}
    if unknown:
        raise SimulationError(f"no such device(s) in the config: {sorted(unknown)}")
    chosen = [d for d in config.devices if not opts.devices or d.id in opts.devices]
    if not chosen:
        raise SimulationError("no devices to simulate: add `devices:` to the config")
    return [
        DeviceStream(d, Renderer(d, profiles[d.profile]), config.models.dir, opts) for d in chosen
    ]


def run(config: Config, opts: Options, stop: threading.Event | None = None) -> int:
    """Publish until every stream is done (`count`) or `stop` is set. Returns messages sent."""
    stop = stop or threading.Event()
    streams = build_streams(config, opts)
    mqtt = MqttClient(
        config.mqtt.model_copy(update={"session_expiry_s": 0}),
        f"edge-agent-simulator-{uuid.uuid4().hex[:8]}",
        will=None,
        subscriptions=[],
        on_message=_ignore,
        manual_ack=False,
    )
    mqtt.start()
    try:
        if not mqtt.wait_connected(config.mqtt.connect_timeout_s):
            raise SimulationError(
                f"cannot reach the MQTT broker at {config.mqtt.host}:{config.mqtt.port}"
            )
        for s in streams:
            print(
                f"{s.device.id}: {s.renderer.profile.name} on {s.renderer.topic}, "
                f"task {s.device.tasks[0]}, {s.speed:g}x real time",
                flush=True,
            )
        return _publish_all(mqtt, streams, opts, stop)
    finally:
        mqtt.stop(timeout=2.0)


def _publish_all(
    mqtt: MqttClient, streams: list[DeviceStream], opts: Options, stop: threading.Event
) -> int:
    heap: list[tuple[float, int, list[tuple[str, bytes]], str | None]] = []
    for i, stream in enumerate(streams):
        item = stream.next()
        if item is not None:
            heapq.heappush(heap, (item[0], i, item[1], item[2]))
    sent = 0
    delivered = [0]
    lock = threading.Lock()

    def one_delivered() -> None:
        with lock:
            delivered[0] += 1

    while heap and not stop.is_set():
        due, i, messages, note = heap[0]
        wait = due - time.monotonic()
        if wait > 0 and stop.wait(min(wait, 0.5)):
            break
        if wait > 0.5:
            continue
        heapq.heappop(heap)
        if note:
            print(f"{streams[i].device.id}: {note}", flush=True)
        for topic, payload in messages:
            mqtt.publish(topic, payload, qos=opts.qos, on_delivered=one_delivered)
            sent += 1
        item = streams[i].next()
        if item is not None:
            heapq.heappush(heap, (item[0], i, item[1], item[2]))
    end = time.monotonic() + 5.0  # let the last messages reach the broker
    while time.monotonic() < end and delivered[0] < sent and not stop.is_set():
        time.sleep(0.05)
    return sent


def _ignore(message: Message) -> None:
    return None
