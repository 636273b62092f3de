"""Per-device windows: bounded, in timestamp order, resampled to the task's period, gaps
and out-of-order messages handled, and one device's garbage never touching another's
window (pure logic)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.devices.bindings import BINDINGS, Binding
from agent.devices.config import DeviceConfig
from agent.devices.device import RESYNC_AFTER, Device
from agent.devices.profiles import default_profiles_dir, load_profiles
from agent.devices.window import Window
from agent.errors import InputError

PROFILES = load_profiles(default_profiles_dir())
T0 = 1_730_800_000.0


def _row(v: float) -> np.ndarray:
    return np.array([v], dtype=np.float32)


def test_message_clock_windows_fill_then_hop() -> None:
    w = Window(length=4, period_s=None, max_gap_s=None, hop=2)
    ready = []
    for i in range(10):
        ready += w.add(T0 + i, _row(i), timed=False)
    assert [r.values[:, 0].tolist() for r in ready] == [
        [0, 1, 2, 3],
        [2, 3, 4, 5],
        [4, 5, 6, 7],
        [6, 7, 8, 9],
    ]
    assert w.filled == 4  # bounded


def test_timed_readings_are_resampled_by_sample_and_hold() -> None:
    w = Window(length=6, period_s=10.0, max_gap_s=100.0)
    # A device reporting irregularly: on change, sometimes twice between grid points.
    ready = []
    for dt, v in [(0, 1), (4, 2), (7, 3), (31, 4), (52, 5)]:
        ready += w.add(T0 + dt, _row(v), timed=True)
    (r,) = ready
    # Slots at 0, 10, 20, 30, 40, 50 hold the latest reading at or before them.
    assert r.values[:, 0].tolist() == [1, 3, 3, 3, 4, 4]
    assert (r.start, r.end) == (T0, T0 + 50)


def test_readings_on_the_grid_are_taken_as_they_are() -> None:
    w = Window(length=100, period_s=0.1, max_gap_s=0.5)
    ready = []
    for i in range(100):
        ready += w.add(T0 + i * 0.1, _row(i), timed=True)  # float steps: exact hits
    (r,) = ready
    assert r.values[:, 0].tolist() == list(range(100))
    assert w.held == 0


def test_a_gap_restarts_the_window_instead_of_holding_across_it() -> None:
    w = Window(length=3, period_s=10.0, max_gap_s=50.0)
    assert w.add(T0, _row(1), timed=True) == []
    assert w.add(T0 + 10, _row(2), timed=True) == []
    assert w.add(T0 + 500, _row(3), timed=True) == []  # 490 s of silence
    assert w.restarts == 1 and w.filled == 1
    ready = w.add(T0 + 510, _row(4), timed=True) + w.add(T0 + 520, _row(5), timed=True)
    assert ready[0].values[:, 0].tolist() == [3, 4, 5]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 30.0), min_size=1, max_size=200))
def test_windows_stay_bounded_ordered_and_on_the_grid(steps: list[float]) -> None:
    w = Window(length=8, period_s=10.0, max_gap_s=60.0, hop=3)
    t = T0
    for i, step in enumerate(steps):
        t += step
        for r in w.add(t, _row(i), timed=True):
            assert r.values.shape == (8, 1)
            assert r.end - r.start == pytest.approx(70.0)
            assert np.all(np.diff(r.values[:, 0]) >= 0)  # values only come from the past
        assert w.filled <= 8


def _device(profile: str, task: str, **extra: object) -> Device:
    config = DeviceConfig(id=f"d-{task}", profile=profile, tasks=[task], **extra)  # type: ignore[arg-type]
    return Device(config, PROFILES[profile], [BINDINGS[task]], 1_048_576)


def _imu(ts: float, n: int = 10, value: float = 0.5) -> bytes:
    rows = [[value, value, value]] * n
    return orjson.dumps({"ts": ts, "rate_hz": 10, "accel": rows, "gyro": rows})


def test_a_wearable_fills_one_activity_window_from_ten_batches() -> None:
    device = _device("wearable_imu", "activity")
    jobs = []
    for k in range(10):
        jobs += device.ingest("wearables/x/imu", _imu(T0 + k, value=k), arrival=T0)
    (job,) = jobs
    assert job.values is not None and job.values.shape == (100, 6)
    assert BINDINGS["activity"].canonical(job.values).shape == (100, 6)
    assert job.values[::10, 0].tolist() == list(range(10))


def test_out_of_order_is_refused_and_changes_nothing() -> None:
    device = _device("wearable_imu", "activity")
    device.ingest("wearables/x/imu", _imu(T0 + 5), arrival=T0)
    before = device.windows["activity"].filled
    with pytest.raises(InputError) as info:
        device.ingest("wearables/x/imu", _imu(T0 + 1), arrival=T0)
    assert info.value.code == "out_of_order"
    assert device.windows["activity"].filled == before
    # The same message again (a QoS 1 redelivery, a re-sent state) is a quiet duplicate.
    assert device.ingest("wearables/x/imu", _imu(T0 + 5), arrival=T0) == []
    assert device.duplicates == 1


def test_a_clock_that_went_back_for_good_restarts_the_windows() -> None:
    device = _device("wearable_imu", "activity")
    device.ingest("wearables/x/imu", _imu(T0 + 1000), arrival=T0)
    for _ in range(RESYNC_AFTER - 1):
        with pytest.raises(InputError):
            device.ingest("wearables/x/imu", _imu(T0), arrival=T0)
    device.ingest("wearables/x/imu", _imu(T0), arrival=T0)  # accepted: new clock
    assert device.last_ts == pytest.approx(T0 + 0.9)
    assert device.windows["activity"].filled == 10


def test_garbage_from_one_device_never_touches_another_devices_window() -> None:
    good, bad = _device("wearable_imu", "activity"), _device("wearable_imu", "activity")
    garbage = [
        b"not json",
        orjson.dumps({"ts": T0, "rate_hz": 10, "accel": [["1", 2, 3]], "gyro": [[1, 2, 3]]}),
        orjson.dumps({"ts": T0, "rate_hz": 10, "accel": [[1, 2, 3]], "gyro": [[1, 2]]}),
        orjson.dumps({"steps": 12}),
    ]
    jobs = []
    for k in range(10):
        jobs += good.ingest("wearables/good/imu", _imu(T0 + k, value=k), arrival=T0)
        for payload in garbage:
            with pytest.raises(InputError):
                bad.ingest("wearables/bad/imu", payload, arrival=T0)
        if k == 5:
            with pytest.raises(InputError):
                good.ingest("wearables/good/imu", _imu(T0 + 1), arrival=T0)  # out of order
    (job,) = jobs
    assert job.values is not None
    assert job.values[::10, 0].tolist() == list(range(10))  # exactly the good readings
    assert bad.windows["activity"].filled == 0


def test_untimed_plug_readings_are_one_sample_each() -> None:
    device = _device("shelly_gen2", "appliance")
    binding: Binding = BINDINGS["appliance"]
    jobs = []
    for i in range(binding.length):
        payload = orjson.dumps({"id": 0, "apower": float(i)})
        jobs += device.ingest("x/status/switch:0", payload, arrival=T0 + i * 0.001)
    (job,) = jobs
    assert job.values is not None
    canonical = binding.canonical(job.values)
    assert canonical.shape == (1460,) and canonical[-1] == 1459.0


def test_timed_plug_readings_faster_than_10s_are_resampled() -> None:
    device = _device("zigbee2mqtt", "appliance")
    jobs = []
    for i in range(2 * 1460):  # every 5 s: twice the model's rate
        payload = orjson.dumps({"power": float(i), "last_seen": int((T0 + 5 * i) * 1000)})
        jobs += device.ingest("zigbee2mqtt/p", payload, arrival=T0)
    assert jobs
    values = jobs[0].values
    assert values is not None and values.shape == (1460, 1)
    assert values[:4, 0].tolist() == [0, 2, 4, 6]  # every other reading, on the 10 s grid
