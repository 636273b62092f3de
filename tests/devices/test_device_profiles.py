"""Device profiles and the parser: every documented example parses, the simulator's payloads
round-trip, and hostile payloads are refused with a wire code (pure logic)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import orjson
import pytest

from agent.config import LimitsConfig
from agent.devices.config import DeviceConfig
from agent.devices.parse import Parser, parse_timestamp
from agent.devices.profiles import Profile, TimestampSpec, default_profiles_dir, load_profiles
from agent.devices.render import Renderer
from agent.errors import InputError
from agent.tasks.digits import DigitsTask

PROFILES = load_profiles(default_profiles_dir())
REQUIRED = {"zigbee2mqtt", "tasmota", "shelly_gen2", "esphome", "tablet", "wearable_imu"}


def _parser(name: str, **overrides: str) -> Parser:
    return Parser(PROFILES[name], overrides, 1_048_576)


def _payload(example: Any) -> bytes:
    return example.encode() if isinstance(example, str) else orjson.dumps(example)


def test_the_required_profiles_exist_with_references_and_examples() -> None:
    assert set(PROFILES) >= REQUIRED
    for profile in PROFILES.values():
        assert profile.references and profile.examples
        assert all(r.startswith("https://") for r in profile.references)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_example_payload_parses(name: str) -> None:
    profile = PROFILES[name]
    for example in profile.examples:
        readings = _parser(name).parse(example.topic, _payload(example.payload))
        assert readings, example.topic
        for reading in readings:
            assert set(reading.values) <= profile.channels
            assert reading.values or reading.image


def test_examples_give_the_documented_values() -> None:
    tasmota = PROFILES["tasmota"].examples[0]
    (r,) = _parser("tasmota").parse(tasmota.topic, _payload(tasmota.payload))
    assert r.values["power"] == 86.0
    assert r.ts == datetime(2024, 11, 5, 10, 15, 20).astimezone().timestamp()  # local time
    shelly = PROFILES["shelly_gen2"].examples[0]
    (r,) = _parser("shelly_gen2").parse(shelly.topic, _payload(shelly.payload))
    assert r.values["power"] == 86.3 and r.ts is None
    z2m = PROFILES["zigbee2mqtt"].examples
    (plug,) = _parser("zigbee2mqtt").parse(z2m[0].topic, _payload(z2m[0].payload))
    assert plug.values == {"power": 86.0} and plug.ts == pytest.approx(1730797951.204)
    (air,) = _parser("zigbee2mqtt").parse(z2m[1].topic, _payload(z2m[1].payload))
    assert air.values["co2"] == 612.0 and air.ts == pytest.approx(1730798000.123)
    esp = PROFILES["esphome"].examples[0]
    assert _parser("esphome").parse(esp.topic, b"612")[0].values == {"co2": 612.0}
    imu = PROFILES["wearable_imu"].examples[0]
    readings = _parser("wearable_imu").parse(imu.topic, _payload(imu.payload))
    assert [r.ts for r in readings] == pytest.approx([1730800512.0, 1730800512.1, 1730800512.2])
    assert readings[2].values["accel_x"] == 10.2084 and readings[2].values["gyro_z"] == -5.0551


def test_tablet_example_is_a_real_digit_image() -> None:
    tablet = PROFILES["tablet"].examples[0]
    (r,) = _parser("tablet").parse(tablet.topic, _payload(tablet.payload))
    assert r.image is not None
    grid = DigitsTask().parse_input({"image": r.image}, LimitsConfig())  # type: ignore[call-arg]
    assert grid.shape == (8, 8) and grid.max() > 0


@pytest.mark.parametrize("name", sorted(REQUIRED - {"tablet"}))
def test_render_then_parse_round_trips(name: str) -> None:
    profile = PROFILES[name]
    device = DeviceConfig(id="dev-1", profile=name, tasks=["air_quality"])  # type: ignore[call-arg]
    renderer = Renderer(device, profile)
    ts = 1_730_800_000.0
    if name == "wearable_imu":
        values: dict[str, Any] = {
            "accel": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
            "gyro": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
            "rate_hz": 10,
        }
    else:
        values = {c: 12.5 for c in sorted(profile.channels) if c != "occupancy"}
    parsed: dict[str, float] = {}
    stamps = []
    for topic, payload in renderer.render(ts, values):
        for reading in _parser(name).parse(topic, payload):
            parsed.update(reading.values)
            stamps.append(reading.ts)
    if name == "wearable_imu":
        assert parsed["gyro_z"] == 6.0 and stamps == pytest.approx([ts, ts + 0.1])
    else:
        assert parsed == {c: 12.5 for c in values}
        if profile.timestamp is not None:
            assert stamps[0] == pytest.approx(ts, abs=1.0)  # Tasmota: whole seconds


GARBAGE: list[tuple[str, str, bytes, str]] = [
    ("zigbee2mqtt", "zigbee2mqtt/x", b"not json", "invalid_json"),
    ("zigbee2mqtt", "zigbee2mqtt/x", b'{"co2": "612"}', "invalid_field"),
    ("zigbee2mqtt", "zigbee2mqtt/x", b'{"co2": true}', "invalid_field"),
    ("zigbee2mqtt", "zigbee2mqtt/x", b'{"occupancy": "yes"}', "invalid_field"),
    ("zigbee2mqtt", "zigbee2mqtt/x", b'{"co2": NaN}', "not_finite"),
    ("zigbee2mqtt", "zigbee2mqtt/x", b'{"linkquality": 80}', "no_known_fields"),
    ("zigbee2mqtt", "zigbee2mqtt/x", b"[1, 2]", "invalid_payload"),
    ("zigbee2mqtt", "zigbee2mqtt/x", b'{"co2": 600, "last_seen": "yesterday"}', "bad_timestamp"),
    ("zigbee2mqtt", "zigbee2mqtt/x", b'{"co2": 600, "last_seen": 1e300}', "bad_timestamp"),
    ("tasmota", "tele/x/SENSOR", b'{"ENERGY": {"Power": "86 W"}}', "invalid_field"),
    ("tasmota", "tele/x/SENSOR", b'{"ENERGY": {"Power": 1e999}}', "invalid_json"),
    ("shelly_gen2", "x/status/switch:0", b'{"apower": [1]}', "invalid_field"),
    ("esphome", "x/sensor/co2/state", b"nan", "not_finite"),
    ("esphome", "x/sensor/co2/state", b"six hundred", "invalid_field"),
    ("tablet", "classroom/x/handwriting", b'{"image": 12}', "invalid_field"),
    (
        "wearable_imu",
        "wearables/x/imu",
        b'{"ts": 1730800512, "rate_hz": 10, "accel": [[1, 2]], "gyro": [[1, 2, 3]]}',
        "invalid_field",
    ),
    (
        "wearable_imu",
        "wearables/x/imu",
        b'{"ts": 1730800512, "rate_hz": 0, "accel": [[1, 2, 3]], "gyro": [[1, 2, 3]]}',
        "invalid_field",
    ),
    (
        "wearable_imu",
        "wearables/x/imu",
        b'{"ts": 1730800512, "rate_hz": 10, "accel": [[1, 2, 3]], "gyro": [[1, 2, 3], [4, 5, 6]]}',
        "invalid_field",
    ),
    (
        "wearable_imu",
        "wearables/x/imu",
        b'{"ts": 1730800512, "rate_hz": 10, "accel": [[1, 2, "3"]], "gyro": [[1, 2, 3]]}',
        "invalid_field",
    ),
]


@pytest.mark.parametrize(("name", "topic", "payload", "code"), GARBAGE)
def test_garbage_is_refused_with_a_code(name: str, topic: str, payload: bytes, code: str) -> None:
    with pytest.raises(InputError) as info:
        _parser(name).parse(topic, payload)
    assert info.value.code == code


def test_oversized_payload_is_refused_before_parsing() -> None:
    parser = Parser(PROFILES["tablet"], {}, 1024)
    with pytest.raises(InputError) as info:
        parser.parse("classroom/x/handwriting", b'{"image": "' + b"A" * 2000 + b'"}')
    assert info.value.code == "payload_too_large"


def test_unmapped_esphome_sensors_are_ignored_and_overrides_map_new_names() -> None:
    assert _parser("esphome").parse("node/sensor/wifi_signal/state", b"-61") == []
    custom = _parser("esphome", co2="my_co2")
    assert custom.parse("node/sensor/my_co2/state", b"700")[0].values == {"co2": 700.0}
    z2m = _parser("zigbee2mqtt", power="measurements.watts")
    assert z2m.parse("zigbee2mqtt/p", b'{"measurements": {"watts": 5}}')[0].values == {"power": 5.0}


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("2024-11-05T09:12:31.204Z", "auto", 1730797951.204),
        ("2024-11-05T10:12:31+01:00", "iso8601", 1730797951.0),
        (1730797951204, "auto", 1730797951.204),
        (1730797951.5, "auto", 1730797951.5),
        (1730797951204, "epoch_ms", 1730797951.204),
    ],
)
def test_timestamps(value: Any, fmt: str, expected: float) -> None:
    spec = TimestampSpec(path="t", format=fmt)  # type: ignore[arg-type]
    assert math.isclose(parse_timestamp(value, spec), expected, abs_tol=1e-3)


def test_a_profile_must_say_where_its_values_are() -> None:
    bad = PROFILES["tasmota"].model_dump()
    bad["fields"]["power"]["path"] = None
    with pytest.raises(ValueError, match="path"):
        Profile.model_validate(bad)
