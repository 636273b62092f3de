from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import check_files, load_config
from agent.errors import ConfigError
from tests.conftest import DEPLOY_CONFIG, REPO


def test_deploy_config_is_valid_and_enables_every_builtin_task() -> None:
    from agent.tasks import TASKS

    config = load_config(DEPLOY_CONFIG, environ={})
    assert config.mqtt.host == "localhost" and config.mqtt.port == 1883
    # The vision tasks' pretrained models are not shipped: they need `models pull` first.
    image_tasks = {name for name, task in TASKS.items() if task.image_input}
    assert set(config.tasks) == set(TASKS) - image_tasks
    assert config.models.dir == (REPO / "models").resolve()
    assert check_files(config) == []


def test_unknown_keys_are_rejected_with_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("id: x\nmqtt:\n  host: h\n  prot: 5\nbogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    text = str(err.value)
    assert f"mqtt.prot ({path}:4)" in text
    assert f"bogus ({path}:5)" in text
    assert len(err.value.problems) == 2


def test_every_problem_is_listed(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("mqtt:\n  port: 70000\n  qos: 2\ncloud:\n  url: ftp://x\ntasks:\n  nope: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    joined = "\n".join(err.value.problems)
    assert "mqtt.port" in joined and "mqtt.qos" in joined and "cloud.url" in joined


def test_environment_overrides(tmp_path: Path) -> None:
    config = load_config(
        DEPLOY_CONFIG,
        environ={
            "EDGE_AGENT_ID": "pi-7",
            "EDGE_AGENT_MQTT__HOST": "broker.lan",
            "EDGE_AGENT_MQTT__PORT": "8883",
            "EDGE_AGENT_MQTT__USERNAME": "agent",
            "EDGE_AGENT_CLOUD__URL": "https://cloud.example:8443/",
            "EDGE_AGENT_TASKS__DIGITS__THRESHOLD": "0.5",
            "OTHER": "ignored",
        },
    )
    assert config.id == "pi-7"
    assert config.mqtt.host == "broker.lan" and config.mqtt.port == 8883
    assert config.mqtt.username == "agent"
    assert config.cloud.url == "https://cloud.example:8443"
    assert config.tasks["digits"].threshold == 0.5


def test_env_override_errors_are_reported() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(DEPLOY_CONFIG, environ={"EDGE_AGENT_MQTT__PORT": "many"})
    assert "mqtt.port" in str(err.value)


def test_secrets_in_yaml_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("mqtt:\n  username: u\n  password: hunter2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "mqtt.password" in str(err.value) and "password_file" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_secrets_from_file_and_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    config = load_config(None, environ={"EDGE_AGENT_MQTT__PASSWORD_FILE": str(tmp_path / "pw")})
    secret = config.mqtt.password()
    assert secret is not None and secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config.mqtt)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("from-systemd")
    (creds / "cloud_token").write_text("tok")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = load_config(None, environ={})
    assert config.mqtt.password().get_secret_value() == "from-systemd"  # type: ignore[union-attr]
    assert config.cloud.token().get_secret_value() == "tok"  # type: ignore[union-attr]


def test_id_must_be_a_topic_level() -> None:
    with pytest.raises(ConfigError):
        load_config(None, environ={"EDGE_AGENT_ID": "a/b"})
    with pytest.raises(ConfigError):
        load_config(None, environ={"EDGE_AGENT_ID": "a+"})


def _check_config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_cli(tmp_path: Path) -> None:
    ok = _check_config("-c", str(DEPLOY_CONFIG))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  port: 0\n  colour: blue\nmodels:\n  dir: /nonexistent\n")
    result = _check_config("-c", str(bad))
    assert result.returncode == 1
    assert "mqtt.port" in result.stderr and "mqtt.colour" in result.stderr
    missing = tmp_path / "missing.yaml"
    missing.write_text("models:\n  dir: /nonexistent\nmqtt:\n  password_file: /nope\n")
    result = _check_config("-c", str(missing))
    assert result.returncode == 1
    assert "manifest.json" in result.stderr and "/nope" in result.stderr


def test_configuration_doc_is_generated_from_the_code() -> None:
    from agent.config_doc import reference_markdown

    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == reference_markdown(), "run: edge-agent config-reference > docs/configuration.md"
