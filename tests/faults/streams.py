"""The broker-outage scenario with the agent's own result streams: device windows and a
local camera. Builds the agent's configuration (wearables, a looping video file), feeds
the wearables, and checks each stream the way a subscriber would see it.

"In order" per stream, concretely:
- a device's results (`<root>/<device>/<task>`, retained): the windows' `window.end`
  strictly increasing, every window exactly once;
- the camera's person events (`<root>/events`): each event `start`, `update`s, `end`
  under one id, one event open at a time, start times increasing;
- the camera's Home Assistant events (`<root>/camera/<name>/event`): `person_enter` and
  `person_leave` alternating, `ts` not decreasing;
- the camera's occupancy (`<root>/camera/<name>/person`, retained): `1` and `0` alternating;
- and for every topic, what the outbox held when the broker came back arrives as one run,
  in the outbox's order.
An agent SIGKILLed and restarted forgets what it was tracking: its open person event never
ends and its first occupancy state may repeat the last one. The checks allow exactly that,
at the restart.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from agent import imaging
from agent.devices.config import DeviceConfig
from agent.devices.profiles import load_profiles
from agent.devices.render import Renderer
from agent.registry import load_testset
from tests.faults.harness import DEPLOY_CONFIG, MODELS, REPO, Arrival, Figures, Recorder
from tests.vision.conftest import MOVENET, PRETRAINED, fit, image_rgb

PROFILES = REPO / "devices" / "profiles"
CAMERA = "hall"
WEARABLES = ("wrist-1", "wrist-2", "wrist-3")
PERIOD_S = 0.1  # the activity task's sampling period (10 Hz)
WINDOW = 100  # samples per activity window
BATCH = 10  # samples per wearable message; also the windows' hop


# ----------------------------------------------------------------------------- the agent


def write_video(path: Path) -> Path:
    """A looping scene: a person squats in view, leaves, another walks in, leaves (8 frames
    each; 6.4 s per loop at 5 fps). Built from the shared images."""
    room = np.full((240, 320, 3), 90, dtype=np.uint8)
    room[160:, :] = 60  # a floor
    squat, grace = (fit(image_rgb(n), 320, 240) for n in ("squat.bmp", "grace_hopper.bmp"))
    imaging.write_video(str(path), [squat] * 8 + [room] * 8 + [grace] * 8 + [room] * 8, fps=5)
    return path


def write_config(directory: Path) -> Path:
    """deploy/agent.yaml plus three wearables and a camera reading a video file. Every
    activity window asks the cloud (threshold 1.0), so a slow cloud answers them one by one
    through the outage; its deadline outlasts the outage."""
    if not (PRETRAINED / MOVENET).is_file():  # image_rgb() skips when the images are absent
        pytest.skip(f"the shared MoveNet model {PRETRAINED / MOVENET} is absent")
    data: dict[str, Any] = yaml.safe_load(DEPLOY_CONFIG.read_text(encoding="utf-8"))
    video = write_video(directory / "hall.avi")
    data["models"] = {"dir": str(MODELS), "extra_dirs": [str(PRETRAINED)]}
    data["device_profiles"] = str(PROFILES)
    data["tasks"] = {"activity": {"threshold": 1.0}}
    data["limits"]["default_deadline_ms"] = 60_000
    data["devices"] = [
        {"id": d, "profile": "wearable_imu", "tasks": ["activity"], "hop": BATCH} for d in WEARABLES
    ]
    data["cameras"] = {
        CAMERA: {
            "source": {"type": "opencv", "url": str(video), "fps": 5, "loop": True},
            "tasks": ["person"],
            "motion": {"enabled": False},
            "person": {"min_frames": 2, "end_frames": 2, "update_interval_s": 1.0},
        }
    }
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def camera_topics(root: str) -> list[str]:
    return [f"{root}/events", f"{root}/camera/{CAMERA}/event", f"{root}/camera/{CAMERA}/person"]


def device_topics(root: str) -> list[str]:
    return [f"{root}/{d}/activity" for d in WEARABLES]


# ----------------------------------------------------------------------------- the devices


def feed_wearables(recorder: Recorder, windows: int, t0: float) -> dict[str, list[float]]:
    """Publish, in the wearable profile's format, enough 1 s batches for `windows` full
    windows per wearable (the first after 10 batches, then one per batch). Returns each
    device's expected `window.end` values, in order."""
    x, _ = load_testset(MODELS / "activity" / "testset.npz")
    profile = load_profiles(PROFILES)["wearable_imu"]
    samples = WINDOW + (windows - 1) * BATCH
    need = math.ceil(samples / WINDOW)
    expected: dict[str, list[float]] = {}
    renderers = {}
    series = {}
    for k, device in enumerate(WEARABLES):
        config = DeviceConfig.model_validate(
            {"id": device, "profile": "wearable_imu", "tasks": ["activity"]}
        )
        renderers[device] = Renderer(config, profile)
        picks = [(k * need + i) % len(x) for i in range(need)]
        series[device] = np.concatenate([x[i] for i in picks])[:samples].astype(np.float64)
        expected[device] = [
            round(t0 + (WINDOW - 1 + w * BATCH) * PERIOD_S, 3) for w in range(windows)
        ]
    for start in range(0, samples, BATCH):
        for device in WEARABLES:
            rows = np.round(series[device][start : start + BATCH], 4)
            values = {"accel": rows[:, :3].tolist(), "gyro": rows[:, 3:].tolist(), "rate_hz": 10}
            for topic, payload in renderers[device].render(t0 + start * PERIOD_S, values):
                recorder.publish(topic, payload)
    return expected


# ----------------------------------------------------------------------------- the checks


def without_copies(arrivals: list[Arrival]) -> tuple[list[Arrival], int]:
    """Drop the broker's resends to the recorder (DUP, a payload already seen on the topic)."""
    seen: set[tuple[str, bytes]] = set()
    kept: list[Arrival] = []
    copies = 0
    for a in arrivals:
        key = (a.topic, a.payload)
        if a.dup and key in seen:
            copies += 1
            continue
        seen.add(key)
        kept.append(a)
    return kept, copies


def run_at(arrived: list[bytes], stored: list[bytes]) -> int:
    """Where `stored` occurs as one contiguous run in `arrived` (-1: it does not)."""
    n = len(stored)
    for i in range(len(arrived) - n + 1):
        if arrived[i : i + n] == stored:
            return i
    return -1


def missing(arrived: list[bytes], stored: list[bytes]) -> int:
    """Stored messages that never arrived (as a multiset: `1`/`0` repeat by design)."""
    return sum((Counter(stored) - Counter(arrived)).values())


def device_problems(payloads: list[bytes], expected: list[float]) -> list[str]:
    ends = [float(orjson.loads(p)["window"]["end"]) for p in payloads]
    problems = []
    if any(b <= a for a, b in itertools.pairwise(ends)):
        problems.append(f"window ends not increasing: {ends}")
    if sorted(set(ends)) != expected:
        problems.append(f"windows {sorted(set(ends))} instead of {expected}")
    return problems


def person_event_problems(payloads: list[bytes], killed_at: float | None) -> list[str]:
    """Frigate-style life cycles, one at a time; an event open when the agent was killed
    (`killed_at`, wall clock) may stay open."""
    problems = []
    open_event: dict[str, Any] | None = None
    last_start = -math.inf
    for raw in payloads:
        event = orjson.loads(raw)
        kind, after = event["type"], event["after"]
        if kind == "start":
            if open_event is not None and not (
                killed_at is not None and open_event["start_time"] < killed_at < after["start_time"]
            ):
                problems.append(f"start of {after['id']} while {open_event['id']} is open")
            if after["start_time"] <= last_start:
                problems.append(f"start of {after['id']} not after the previous start")
            open_event, last_start = after, after["start_time"]
        elif open_event is None or after["id"] != open_event["id"]:
            problems.append(f"{kind} of {after['id']}, which is not the open event")
        elif after["frames"] < open_event["frames"]:
            problems.append(f"{kind} of {after['id']} with fewer frames than before")
        else:
            open_event = None if kind == "end" else after
    return problems


def ha_event_problems(payloads: list[bytes], killed_at: float | None) -> list[str]:
    problems = []
    last: dict[str, Any] | None = None
    for raw in payloads:
        event = orjson.loads(raw)
        if last is not None:
            if event["ts"] < last["ts"]:
                problems.append(f"ts going back: {last['ts']} then {event['ts']}")
            cut = killed_at is not None and last["ts"] < killed_at < event["ts"]
            if event["event_type"] == last["event_type"] and not cut:
                problems.append(f"{event['event_type']} twice in a row at {event['ts']}")
        last = event
    return problems


def occupancy_problems(payloads: list[bytes], restarts: int) -> list[str]:
    repeats = sum(a == b for a, b in itertools.pairwise(payloads))
    if repeats > restarts:
        return [f"occupancy not alternating: {b' '.join(payloads).decode()}"]
    return []


# ----------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class Outage:
    stored: list[tuple[float, str, bytes]]  # the outbox when the broker came back
    stopped: float  # time.monotonic() of the broker's stop
    back: float  # ... and of its return
    killed_at: float | None  # time.time() of the agent's SIGKILL, if any


def figures(
    scenario: str, rec: Recorder, outage: Outage, topics: list[str], windows: int | None
) -> Figures:
    """One stream's figures. Device results (`windows`: how many the feed makes): every
    window counts, whenever it was produced. Camera: what was produced during the outage
    (stored in the outbox). `max_latency_ms` and the percentiles: how long after the
    broker's return the stored messages arrived."""
    mine = [a for a in rec.arrivals if a.topic in topics]
    kept, copies = without_copies(mine)
    rows = [(c, t, p) for c, t, p in outage.stored if t in topics]
    runs = {t: [p for _, u, p in rows if u == t] for t in topics}
    after = [a for a in kept if a.at >= outage.stopped]
    lost = sum(missing([a.payload for a in after if a.topic == t], runs[t]) for t in topics)
    arrived = {t: [a for a in kept if a.topic == t] for t in topics}
    waits: list[float] = []
    in_order = True
    for topic, run in runs.items():
        if not run:
            continue
        at = run_at([a.payload for a in arrived[topic]], run)
        if at < 0:
            in_order = False
            continue
        waits += [a.at - outage.back for a in arrived[topic][at : at + len(run)]]
    # a JSON payload is unique (ids, times): a repeat is a duplicate; `1`/`0` repeat anyway
    repeats = sum(
        len(v) - len(set(v))
        for v in ([a.payload for a in ps if a.payload[:1] == b"{"] for ps in arrived.values())
    )
    extra: dict[str, Any] = {
        "produced_in_outage": len(rows),
        "delivered_s_after_return": round(max(waits, default=0.0), 2),
        "in_order": in_order,
        "copies_from_broker": copies,
    }
    if windows is not None:
        sent, answered = windows, len({(a.topic, a.payload) for a in kept})
        extra["delivered_before_stop"] = sum(1 for a in kept if a.at < outage.stopped)
    else:
        sent, answered = len(rows), len(rows) - lost
        extra.update({t.rsplit("/", 1)[-1]: len(r) for t, r in runs.items()})
        if outage.killed_at is not None:
            restarted = min((c for c, _, _ in rows if c > outage.killed_at), default=None)
            if restarted is not None:  # the restarted agent's first event
                extra["silent_after_kill_s"] = round(restarted - outage.killed_at, 1)
    ms = np.array(waits) * 1000.0
    return Figures(
        scenario=scenario,
        sent=sent,
        answered=answered,
        lost=sent - answered,
        duplicated=copies + repeats,
        max_latency_ms=float(ms.max()) if ms.size else 0.0,
        p50_ms=float(np.percentile(ms, 50)) if ms.size else 0.0,
        p99_ms=float(np.percentile(ms, 99)) if ms.size else 0.0,
        extra=extra,
    )


def order_problems(
    rec: Recorder,
    outage: Outage,
    cams: list[str],
    devs: list[str],
    expected: dict[str, list[float]],
) -> list[str]:
    """Every stream checked as the module docstring says (empty: all in order)."""
    kept, _ = without_copies(rec.arrivals)
    arrived = {t: [a.payload for a in kept if a.topic == t] for t in cams + devs}
    problems = []
    for topic, payloads in arrived.items():
        run = [p for _, t, p in outage.stored if t == topic]
        if run and run_at(payloads, run) < 0:
            problems.append(f"{topic}: the outbox's {len(run)} messages are not one run in order")
    for device, topic in zip(WEARABLES, devs, strict=True):
        problems += [f"{device}: {p}" for p in device_problems(arrived[topic], expected[device])]
    events, ha_events, occupancy = cams
    problems += person_event_problems(arrived[events], outage.killed_at)
    problems += ha_event_problems(arrived[ha_events], outage.killed_at)
    problems += occupancy_problems(arrived[occupancy], 0 if outage.killed_at is None else 1)
    return problems
