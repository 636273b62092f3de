"""`edge-agent run` as a subprocess: availability, signals, fatal errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.devtools.broker import Mosquitto
from agent.devtools.client import RequestClient
from agent.devtools.procs import agent_env, start_agent
from agent.registry import load_testset
from tests.conftest import DEPLOY_CONFIG, MODELS

X_TEST, Y_TEST = load_testset(MODELS / "digits" / "testset.npz")


def _status(c: RequestClient) -> list[bytes]:
    return [p for t, p, _ in c.messages if t.endswith("/status")]


def _wait_status(c: RequestClient, value: bytes, timeout: float) -> float | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if _status(c) and _status(c)[-1] == value:
            return time.monotonic()
        time.sleep(0.01)
    return None


def test_run_answers_then_sigterm_publishes_stopped_within_2s(
    broker: Mosquitto, cloud_url: str, tmp_path: Path
) -> None:
    agent = start_agent(DEPLOY_CONFIG, agent_env(broker.port, "e2e", cloud_url), tmp_path)
    try:
        with RequestClient(broker.host, broker.port, "e2e") as c:
            assert _wait_status(c, b"online", 20), agent.output()
            rid = c.send("digits", {"pixels": X_TEST[0].tolist()})
            assert c.wait_for([rid], 10), agent.output()
            assert c.answers[rid][0]["result"]["label"] == str(Y_TEST[0])
            sent = time.monotonic()
            agent.signal(signal.SIGTERM)
            at = _wait_status(c, b"stopped", 5)
            assert at is not None, agent.output()
            assert at - sent < 2.0
            assert agent.wait(10) == 0
        # retained: a new subscriber sees `stopped`
        with RequestClient(broker.host, broker.port, "e2e") as c2:
            assert _wait_status(c2, b"stopped", 5)
    finally:
        agent.kill()


def test_sigkill_makes_the_broker_publish_offline(broker: Mosquitto, tmp_path: Path) -> None:
    agent = start_agent(DEPLOY_CONFIG, agent_env(broker.port, "e2ekill", None), tmp_path)
    try:
        with RequestClient(broker.host, broker.port, "e2ekill") as c:
            assert _wait_status(c, b"online", 20), agent.output()
            agent.signal(signal.SIGKILL)
            assert _wait_status(c, b"offline", 10)
    finally:
        agent.kill()


def test_bad_credentials_are_a_clear_fatal_error(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "edge", "right-password"],
        check=True,
        capture_output=True,
    )
    secret = tmp_path / "mqtt_password"
    secret.write_text("wrong-password\n")
    with Mosquitto(extra_config=f"password_file {passwd}", allow_anonymous=False) as broker:
        env = agent_env(
            broker.port,
            "badcreds",
            None,
            {
                "EDGE_AGENT_MQTT__USERNAME": "edge",
                "EDGE_AGENT_MQTT__PASSWORD_FILE": str(secret),
            },
        )
        agent = start_agent(DEPLOY_CONFIG, env, tmp_path)
        code = agent.wait(20)
        output = agent.output()
        assert code == 78, output  # EX_CONFIG: systemd must not restart it
        assert "bad user name or password" in output or "not authorized" in output
        assert output.count("refused the connection") == 1, "no retry storm"
        assert "wrong-password" not in output


def test_invalid_model_stops_startup_naming_the_file(tmp_path: Path) -> None:
    from tests.conftest import shared_file

    bad = shared_file("models/invalid/model_invoking_error.tflite")
    import json
    import shutil

    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    manifest = json.loads((models / "manifest.json").read_text())
    entry = manifest["models"][manifest["tasks"]["digits"]["edge"]]
    target = models / entry["file"]
    shutil.copyfile(bad, target)
    from agent.registry import sha256_file

    entry["sha256"] = sha256_file(target)  # a valid hash: the runtime itself must refuse it
    (models / "manifest.json").write_text(json.dumps(manifest))
    env = agent_env(1, "badmodel", None, {"EDGE_AGENT_MODELS__DIR": str(models)})
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(DEPLOY_CONFIG)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert str(target) in proc.stderr
    assert "fake-op-double" in proc.stderr or "custom op" in proc.stderr


def test_sighup_reloads_config_and_models_without_dropping_requests(
    broker: Mosquitto, cloud_url: str, tmp_path: Path
) -> None:
    """SIGHUP re-reads the config file: a new threshold takes effect, requests keep flowing."""
    import shutil

    config = tmp_path / "agent.yaml"
    shutil.copyfile(DEPLOY_CONFIG, config)
    text = config.read_text().replace("dir: ../models", f"dir: {MODELS}")
    config.write_text(text)
    agent = start_agent(config, agent_env(broker.port, "hup", cloud_url), tmp_path)
    try:
        with RequestClient(broker.host, broker.port, "hup") as c:
            assert _wait_status(c, b"online", 20), agent.output()
            before = [c.send("digits", {"pixels": X_TEST[i].tolist()}) for i in range(100)]
            config.write_text(text.replace("  digits: {}", "  digits: {threshold: 1.0}"))
            agent.signal(signal.SIGHUP)
            during = [c.send("digits", {"pixels": X_TEST[i].tolist()}) for i in range(100)]
            assert c.wait_for(before + during, 20), agent.output()
            time.sleep(1.0)
            after = [c.send("digits", {"pixels": X_TEST[i].tolist()}) for i in range(20)]
            assert c.wait_for(after, 20)
            assert all(len(c.answers[r]) == 1 for r in before + during + after)
            # threshold 1.0: every auto request now wants the cloud
            assert all(c.answers[r][0]["source"] == "cloud" for r in after)
            assert agent.alive()
            assert "reloaded" in agent.output()
    finally:
        agent.stop()


def test_secrets_never_reach_the_logs(cloud_url: str, tmp_path: Path) -> None:
    """A full run at DEBUG with a broker password and a cloud token: neither is logged."""
    password, token = "pw-Sup3rSecret-42", "tok-Cl0udSecret-77"
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "edge", password], check=True)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text(password)
    (creds / "cloud_token").write_text(token)
    with Mosquitto(extra_config=f"password_file {passwd}", allow_anonymous=False) as broker:
        env = agent_env(
            broker.port,
            "secrets",
            cloud_url,
            {
                "EDGE_AGENT_MQTT__USERNAME": "edge",
                "EDGE_AGENT_LOG_LEVEL": "DEBUG",
                "CREDENTIALS_DIRECTORY": str(creds),
            },
        )
        agent = start_agent(DEPLOY_CONFIG, env, tmp_path)
        try:
            import orjson

            from agent.config import MqttConfig
            from agent.mqtt.client import Message, MqttClient

            got: list[Message] = []
            client = MqttClient(
                MqttConfig(host=broker.host, port=broker.port, username="edge"),  # type: ignore[call-arg]
                "secrets-client",
                will=None,
                subscriptions=[
                    ("edge-agent/secrets/response/#", 1),
                    ("edge-agent/secrets/status", 1),
                ],
                on_message=got.append,
                password=password,
                manual_ack=False,
            )
            client.start()
            assert client.wait_connected(10)
            end = time.monotonic() + 20
            while not any(m.payload == b"online" for m in got) and time.monotonic() < end:
                time.sleep(0.05)
            got.clear()
            for i in range(20):
                body = {"id": f"s{i}", "input": {"pixels": X_TEST[i].tolist()}, "route": "cloud"}
                client.publish("edge-agent/secrets/request/digits", orjson.dumps(body))
            client.publish("edge-agent/secrets/request/digits", b"bad " + password.encode())
            end = time.monotonic() + 15
            while len(got) < 20 and time.monotonic() < end:
                time.sleep(0.05)
            client.stop()
            assert len(got) >= 20, agent.output()
        finally:
            agent.stop()
    output = agent.output()
    assert "DEBUG" in output
    assert password not in output and token not in output
