"""The configuration: one YAML file validated by a strict pydantic tree.

Every key can be overridden from the environment: `EDGE_AGENT_` + the key path joined by
`__` (`EDGE_AGENT_MQTT__PORT=1884`). Secrets never live in the YAML: they are read from
files named by `*_file` keys or from systemd's `$CREDENTIALS_DIRECTORY`.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.devices.config import DeviceConfig, HomeAssistantConfig
from agent.errors import ConfigError
from agent.vision.config import CameraConfig, CameraName, VisionConfig

ENV_PREFIX = "EDGE_AGENT_"
_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_.:-]+(/[A-Za-z0-9_.:-]+)*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _default_id() -> str:
    name = socket.gethostname().split(".")[0] or "edge"
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _read_secret(path: Path, what: str) -> SecretStr | None:
    """The secret in `path`; None when the file is empty (install.sh creates empty
    credential files so that the unit's LoadCredential= finds them)."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc.strerror}") from None
    return SecretStr(value) if value else None


def _credential(name: str) -> Path | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / name).is_file():
        return Path(directory) / name
    return None


class TlsConfig(_Strict):
    enabled: bool = Field(False, description="Connect with TLS.")
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's cert.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM).")
    key_file: Path | None = Field(
        None,
        description="Client key (PEM); default: $CREDENTIALS_DIRECTORY/mqtt_client_key.",
    )
    check_hostname: bool = Field(True, description="Verify the broker's hostname.")

    def resolved_key_file(self) -> Path | None:
        return self.key_file or _credential("mqtt_client_key")


class ReconnectConfig(_Strict):
    min_delay_s: float = Field(0.5, gt=0, description="First reconnect delay.")
    max_delay_s: float = Field(
        5.0,
        gt=0,
        description="Cap of the exponential backoff: after an outage of any length the agent "
        "is back (and drains its outbox) within about this long of the broker's return.",
    )


class MqttConfig(_Strict):
    host: str = Field("localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT protocol version.")
    client_id: str | None = Field(
        None, description="Stable client id; default `edge-agent-<id>`.", max_length=128
    )
    username: str | None = Field(None, description="User name for the broker.")
    password_file: Path | None = Field(
        None,
        description="File holding the password; default $CREDENTIALS_DIRECTORY/mqtt_password.",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive.")
    session_expiry_s: int = Field(
        3600, ge=0, description="MQTT 5 session expiry: the broker keeps our queue this long."
    )
    qos: Literal[0, 1] = Field(1, description="QoS of subscriptions and results.")
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP/TLS connect timeout.")
    max_inflight: int = Field(
        0,
        ge=0,
        le=65535,
        description="Our QoS 1 publishes awaiting PUBACK at once; 0: no limit (answers are "
        "already bounded by the requests the broker lets us hold unacknowledged).",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig)  # type: ignore[arg-type]
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)  # type: ignore[arg-type]

    def password(self) -> SecretStr | None:
        path = self.password_file or _credential("mqtt_password")
        return _read_secret(path, "MQTT password") if path else None


class BreakerConfig(_Strict):
    failure_threshold: int = Field(5, ge=1, description="Consecutive failures that open it.")
    reset_timeout_s: float = Field(10.0, gt=0, description="Open time before a probe.")


class CloudConfig(_Strict):
    url: str | None = Field(
        None, description="Base URL of an Open Inference Protocol (KServe V2) service."
    )
    token_file: Path | None = Field(
        None,
        description="File with a bearer token; default $CREDENTIALS_DIRECTORY/cloud_token.",
    )
    max_concurrency: int = Field(8, ge=1, le=256, description="Requests in flight at once.")
    queue_size: int = Field(256, ge=1, description="Cloud requests waiting for a slot.")
    min_budget_ms: int = Field(
        20, ge=0, description="Below this remaining deadline the cloud is not asked."
    )
    verify_tls: bool = Field(True, description="Verify the service's TLS certificate.")
    retries: int = Field(
        1,
        ge=0,
        le=5,
        description="Retries of a request that failed to connect or got 429/502/503/504, "
        "within its deadline (inference is idempotent).",
    )
    backoff_base_ms: float = Field(
        50.0, gt=0, description="Full-jitter backoff before retry n: uniform(0, base * 2^n)."
    )
    backoff_cap_ms: float = Field(
        1000.0, gt=0, description="Cap of the retry backoff; a Retry-After header wins."
    )
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)  # type: ignore[arg-type]

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    def token(self) -> SecretStr | None:
        path = self.token_file or _credential("cloud_token")
        return _read_secret(path, "cloud token") if path else None


class TaskConfig(_Strict):
    enabled: bool = Field(True, description="Subscribe to this task's requests.")
    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="`auto` asks the cloud below this top score; "
        "default: the calibrated threshold in the model manifest.",
    )
    local: bool = Field(True, description="Load the local (edge) model.")
    cloud: bool = Field(True, description="Allow the cloud for this task.")
    cloud_model: str | None = Field(
        None, description="Model name on the cloud service; default the task name."
    )
    top_k: int = Field(3, ge=1, le=20, description="Entries in `result.top`.")
    model: str | None = Field(
        None,
        description="Vision tasks: the pretrained model to run (`edge-agent models pull "
        "--list`); default the task's default model.",
    )


class ModelsConfig(_Strict):
    dir: Path = Field(Path("models"), description="Directory with manifest.json.")
    num_threads: int = Field(1, ge=1, le=16, description="TFLite threads per interpreter.")
    verify_hashes: bool = Field(True, description="Refuse a model whose sha256 differs.")
    extra_dirs: list[Path] = Field(
        default_factory=list,
        description="More directories searched (after `dir`) for pretrained vision model "
        "files, e.g. a shared read-only copy.",
    )


class WorkersConfig(_Strict):
    count: int = Field(2, ge=1, le=64, description="Inference worker threads.")
    queue_size: int = Field(1024, ge=1, description="Requests waiting for a worker.")
    max_batch: int = Field(16, ge=1, le=256, description="Largest micro-batch per model.")
    max_wait_ms: float = Field(
        1.0,
        ge=0,
        le=100,
        description="When requests queue up (a worker found at least half a batch waiting), "
        "wait up to this long to fill the batch; an idle or lightly loaded agent never waits.",
    )
    stall_timeout_s: float = Field(
        30.0, gt=0, description="A worker busy on one batch this long is unhealthy: the "
        "systemd watchdog stops being petted, so systemd restarts the agent."
    )
    processes: int = Field(
        1,
        ge=1,
        le=16,
        description="Serving processes. Above 1 the agent starts `processes - 1` more "
        "processes that serve requests only, and all of them share the requests through an "
        "MQTT 5 shared subscription (`$share/<id>-serve/...`): one Python process uses one "
        "core at a time, several use several. Set it to the number of cores for throughput. "
        "De-duplication of re-sent ids is per process then (docs/performance.md).",
    )
    inline: bool = Field(
        True,
        description="Run requests for tasks with small, non-image inputs (digits, appliance, "
        "activity) on the MQTT network thread, in micro-batches of what one socket read "
        "delivered, instead of handing each to a worker thread: no thread hand-off per "
        "request, and a busy agent reads from the broker only as fast as it answers (TCP "
        "backpressure). Image tasks and device windows always use the workers.",
    )
    overload: Literal["reject", "cloud"] = Field(
        "reject",
        description="When the request queue is full: `reject` answers `ok: false`, code "
        "`overloaded`; `cloud` sends the request to the cloud instead (if it has room and "
        "its breaker is closed), answering `overloaded` only when that fails too.",
    )


class LimitsConfig(_Strict):
    max_payload_bytes: int = Field(1_048_576, ge=256, description="Larger messages are refused.")
    max_image_pixels: int = Field(
        16_777_216, ge=1, description="Images that decode to more pixels are refused."
    )
    default_deadline_ms: int = Field(5000, ge=1, description="Deadline when a request has none.")
    max_deadline_ms: int = Field(60_000, ge=1, description="Largest deadline accepted.")


class MetricsConfig(_Strict):
    port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics on this port (off if unset)."
    )
    host: str = Field("127.0.0.1", description="Address to bind; localhost by default.")


class ScaleOutConfig(_Strict):
    group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Share requests with every agent of this group (MQTT 5 shared "
        "subscriptions): clients send to `<base_topic>/<group>/request/<task>`, one member "
        "answers each request on `<base_topic>/<group>/response/<task>` (or the MQTT 5 "
        "response topic); status, stats and errors stay under each agent's own id. "
        "Unset: the agent's own `<base_topic>/<id>/...` topics only.",
    )
    session_expiry_s: int = Field(
        0,
        ge=0,
        description="MQTT session expiry while in a group (instead of mqtt.session_expiry_s). "
        "A broker keeps handing a disconnected member with a live session its share of "
        "requests (mosquitto does), so a dead agent would swallow them: keep it short.",
    )


class StatsConfig(_Strict):
    interval_s: float = Field(60.0, gt=0, description="Period of the retained stats message.")


class OutboxConfig(_Strict):
    """Results the broker cannot take now wait here, on disk (docs/reliability.md)."""

    enabled: bool = Field(True, description="Keep results on disk while the broker is away.")
    durability: Literal["full", "normal"] = Field(
        "full",
        description="`full`: a stored result survives SIGKILL and power loss (fsync per "
        "batch). `normal`: survives SIGKILL; a power cut may lose the last batches, whose "
        "requests the broker then redelivers.",
    )
    max_messages: int = Field(100_000, ge=1, description="Most results kept.")
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Most payload bytes kept.")
    max_age_s: float = Field(86_400.0, gt=0, description="Older results are dropped.")
    drop_policy: Literal["drop_oldest", "reject_new"] = Field(
        "drop_oldest",
        description="When full: drop the oldest results, or refuse new ones (their "
        "requests stay unacknowledged, so the broker keeps them). Drops are counted in stats.",
    )


class DedupeConfig(_Strict):
    """One answer per request id, even when QoS 1 redelivers (docs/reliability.md)."""

    enabled: bool = Field(True, description="De-duplicate requests by task and id.")
    max_entries: int = Field(20_000, ge=1, description="Answered ids remembered.")
    window_s: float = Field(3600.0, gt=0, description="How long an answered id is remembered.")
    persist: bool = Field(True, description="Keep the window on disk, across restarts.")
    replay: bool = Field(
        True,
        description="A re-sent request (same id, not a broker redelivery) gets the stored "
        "answer again instead of nothing.",
    )


class Config(_Strict):
    id: str = Field(
        default_factory=_default_id, description="Agent id in topics; default the hostname."
    )
    base_topic: str = Field("edge-agent", description="First level(s) of every agent topic.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Logging level (DEBUG logs every message)."
    )
    state_dir: Path | None = Field(
        None, description="Persistent state; default $STATE_DIRECTORY or ./state."
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig)  # type: ignore[arg-type]
    cloud: CloudConfig = Field(default_factory=CloudConfig)  # type: ignore[arg-type]
    models: ModelsConfig = Field(default_factory=ModelsConfig)  # type: ignore[arg-type]
    workers: WorkersConfig = Field(default_factory=WorkersConfig)  # type: ignore[arg-type]
    limits: LimitsConfig = Field(default_factory=LimitsConfig)  # type: ignore[arg-type]
    stats: StatsConfig = Field(default_factory=StatsConfig)  # type: ignore[arg-type]
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)  # type: ignore[arg-type]
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)  # type: ignore[arg-type]
    scale_out: ScaleOutConfig = Field(default_factory=ScaleOutConfig)  # type: ignore[arg-type]
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)  # type: ignore[arg-type]
    tasks: dict[str, TaskConfig] = Field(
        default_factory=dict, description="Built-in tasks to serve, by name."
    )
    cameras: dict[CameraName, CameraConfig] = Field(
        default_factory=dict, description="Cameras to analyse, by name (docs/cameras.md)."
    )
    vision: VisionConfig = Field(default_factory=VisionConfig)  # type: ignore[arg-type]
    devices: list[DeviceConfig] = Field(
        default_factory=list,
        description="Sensors whose own messages run through tasks (docs/devices.md).",
    )
    device_profiles: Path | None = Field(
        None, description="Directory of device profiles; default devices/profiles."
    )
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig  # type: ignore[arg-type]
    )

    @field_validator("id")
    @classmethod
    def _topic_safe_id(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise ValueError("must be 1-64 of A-Z a-z 0-9 _ - (it is a topic level)")
        return value

    @field_validator("base_topic")
    @classmethod
    def _topic_safe_base(cls, value: str) -> str:
        if not _TOPIC_LEVEL.match(value):
            raise ValueError("must be topic levels of A-Z a-z 0-9 _ . : - joined by /")
        return value

    @model_validator(mode="after")
    def _known_tasks(self) -> Config:
        from agent.tasks import TASKS

        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; built-in: {sorted(TASKS)}")
        return self

    @model_validator(mode="after")
    def _devices_fit(self) -> Config:
        from agent.devices.checks import check_devices

        served = [name for name, task in self.tasks.items() if task.enabled]
        problems = check_devices(
            self.devices,
            self.device_profiles,
            served,
            f"{self.base_topic}/{self.id}",
            self.cameras,
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"edge-agent-{self.id}"

    def resolved_state_dir(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        env = os.environ.get("STATE_DIRECTORY")
        return Path(env.split(":")[0]) if env else Path("state")


# ----------------------------------------------------------------------------- loading


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML document to its 1-based line number."""
    index: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                index[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                sub = (*path, str(i))
                index[sub] = item.start_mark.line + 1
                walk(item, sub)

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return index


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            value = yaml.safe_load(raw) if raw.strip() else raw
            node[parts[-1]] = value if value is not None else raw
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative file paths in the config are relative to the config file."""

    def fix(node: Any, key: str) -> None:
        if isinstance(node, dict) and isinstance(node.get(key), str):
            p = Path(node[key])
            node[key] = os.path.normpath(p if p.is_absolute() else base / p)

    models = data.get("models")
    fix(models, "dir")
    if isinstance(models, dict) and isinstance(models.get("extra_dirs"), list):
        models["extra_dirs"] = [
            os.path.normpath(d if Path(d).is_absolute() else base / d) if isinstance(d, str) else d
            for d in models["extra_dirs"]
        ]
    fix(data, "state_dir")
    fix(data, "device_profiles")
    mqtt = data.get("mqtt")
    fix(mqtt, "password_file")
    if isinstance(mqtt, dict):
        for key in ("ca_file", "cert_file", "key_file"):
            fix(mqtt.get("tls"), key)
    fix(data.get("cloud"), "token_file")


_SECRET_KEYS = {("mqtt", "password"): "mqtt.password_file", ("cloud", "token"): "cloud.token_file"}


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge with the environment, and validate. Raises ConfigError listing every
    problem with its key path and, where known, the file line."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    where = "<defaults>"
    if path is not None:
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        try:
            loaded = yaml.safe_load(text)
            lines = _line_index(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping"])
        data = loaded
        _resolve_paths(data, path.parent.resolve())
    problems: list[str] = []
    for keys, instead in _SECRET_KEYS.items():
        section = data.get(keys[0])
        if isinstance(section, dict) and keys[1] in section:
            line = lines.get(keys)
            at = f"{where}:{line}" if line else where
            problems.append(
                f"{'.'.join(keys)} ({at}): secrets are not accepted in the config file; "
                f"put it in a file and set {instead}, or use $CREDENTIALS_DIRECTORY"
            )
            del section[keys[1]]
    data = _merge(data, _env_overrides(environ))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            dotted = ".".join(loc) or "(top level)"
            line = None
            for n in range(len(loc), 0, -1):
                line = lines.get(loc[:n])
                if line:
                    break
            at = f"{where}:{line}" if line else where
            problems.append(f"{dotted} ({at}): {err['msg']}")
    if problems:
        raise ConfigError(problems)
    return config


def check_files(config: Config) -> list[str]:
    """Problems with files the config names (readable secrets, TLS files). Empty when fine."""
    problems: list[str] = []
    try:
        config.mqtt.password()
    except ValueError as exc:
        problems.append(f"mqtt.password_file: {exc}")
    try:
        config.cloud.token()
    except ValueError as exc:
        problems.append(f"cloud.token_file: {exc}")
    tls = config.mqtt.tls
    if tls.enabled:
        for key, file in (
            ("ca_file", tls.ca_file),
            ("cert_file", tls.cert_file),
            ("key_file", tls.resolved_key_file()),
        ):
            if file is not None and not file.is_file():
                problems.append(f"mqtt.tls.{key}: no such file {file}")
        if (tls.cert_file is None) != (tls.resolved_key_file() is None):
            problems.append("mqtt.tls: cert_file and key_file go together")
    if not (config.models.dir / "manifest.json").is_file():
        problems.append(f"models.dir: no manifest.json in {config.models.dir}")
    return problems
