"""deploy/mosquitto/ against a real mosquitto: TLS trust, client certificates, the ACL.

A private broker on a free loopback port runs the example mosquitto.conf with
only paths, the port and require_certificate changed (see `derive_config`),
the example ACL verbatim, and certificates from make-certs.sh. Clients are
plain paho-mqtt 2.x (MQTT 5): this tests the broker setup, not the agent.
"""

from __future__ import annotations

import queue
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
USERS = {"edge-agent": "agent-pw", "sensor1": "sensor1-pw", "dashboard": "dash-pw"}
TIMEOUT = 5.0

pytestmark = pytest.mark.skipif(
    not (Path(MOSQUITTO).exists() and shutil.which("mosquitto_passwd") and shutil.which("openssl")),
    reason="needs mosquitto, mosquitto_passwd and openssl (apt-get install mosquitto openssl)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def derive_config(example: str, overrides: dict[str, str], drop: set[str]) -> str:
    """The example config with each overridden directive's value replaced."""
    seen: set[str] = set()
    out: list[str] = []
    for line in example.splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() and not line.startswith("#") else ""
        if key in drop:
            seen.add(key)
            continue
        if key in overrides:
            assert key not in seen, f"{key} appears twice in the example"
            seen.add(key)
            out.append(f"{key} {overrides[key]}")
        else:
            out.append(line)
    missing = (set(overrides) | drop) - seen
    assert not missing, f"the example no longer has {sorted(missing)}"
    return "\n".join(out) + "\n"


def ca_issued_client_cert(pki: Path, name: str, start: str, end: str) -> None:
    """A client certificate from pki's CA valid from ``start`` to ``end``
    (YYYYMMDDHHMMSSZ): `openssl ca` can set past dates, `openssl x509` (3.0) cannot."""
    work = pki / "ca-db"
    if not work.exists():
        (work / "new").mkdir(parents=True)
        (work / "index.txt").write_text("")
        (work / "serial").write_text("1000\n")
    (work / "ca.cnf").write_text(
        f"[ca]\ndefault_ca = test_ca\n[test_ca]\ndatabase = {work}/index.txt\n"
        f"new_certs_dir = {work}/new\nserial = {work}/serial\ndefault_md = sha256\n"
        "policy = anything\nx509_extensions = client\n"
        "[anything]\ncommonName = supplied\n"
        "[client]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n"
    )
    key, csr, crt = f"{pki}/{name}.key", f"{work}/{name}.csr", f"{pki}/{name}.crt"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    run(
        "openssl", "req", "-new", *ec, "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr
    )
    ca = ["-config", f"{work}/ca.cnf", "-cert", f"{pki}/ca.crt", "-keyfile", f"{pki}/ca.key"]
    dates = ["-startdate", start, "-enddate", end]
    run("openssl", "ca", "-batch", "-notext", *ca, *dates, "-in", csr, "-out", crt)


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


@dataclass
class Broker:
    port: int
    pki: Path
    wrong_pki: Path


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    tmp = tmp_path_factory.mktemp("broker")
    pki, wrong = tmp / "pki", tmp / "wrong-pki"
    make_certs = [str(EXAMPLE / "make-certs.sh"), "--key-type", "ec", "--host", "localhost"]
    clients = [arg for user in USERS for arg in ("--client", user)]
    run(*make_certs, "-o", str(pki), "-d", "2", "--ip", "127.0.0.1", *clients)
    run(*make_certs, "-o", str(wrong), "--client", "edge-agent")
    ca_issued_client_cert(pki, "expired", "20200101000000Z", "20200201000000Z")
    now = datetime.now(timezone.utc)
    ca_issued_client_cert(  # the control: same path, current dates
        pki,
        "current",
        f"{now - timedelta(days=1):%Y%m%d%H%M%SZ}",
        f"{now + timedelta(days=1):%Y%m%d%H%M%SZ}",
    )

    passwd = tmp / "passwd"
    passwd.write_text("")
    for user, password in USERS.items():
        run("mosquitto_passwd", "-b", str(passwd), user, password)

    port = free_port()
    conf = derive_config(
        (EXAMPLE / "mosquitto.conf").read_text(),
        {
            "password_file": str(passwd),
            "acl_file": str(EXAMPLE / "acl"),
            "persistence_location": f"{tmp}/",
            "log_dest": f"file {tmp}/mosquitto.log",
            "listener": f"{port} 127.0.0.1",
            "cafile": f"{pki}/ca.crt",
            "certfile": f"{pki}/server.crt",
            "keyfile": f"{pki}/server.key",
            "require_certificate": "true",
        },
        drop={"pid_file"},
    )
    # Started as root, mosquitto would switch to user mosquitto and lose the temp files.
    (tmp / "mosquitto.conf").write_text(conf + "user root\n")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(tmp / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "stderr.log").open("w"),
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (tmp / "stderr.log").read_text()
                    raise RuntimeError(f"mosquitto did not start: {log}") from None
                time.sleep(0.05)
        yield Broker(port, pki, wrong)
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)


class Probe:
    """A paho client whose callbacks only hand events to queues."""

    def __init__(self, user: str, ca: Path, cert: Path | None, key: Path | None) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"probe-{user}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(user, USERS.get(user, "x"))
        self.client.tls_set(
            ca_certs=str(ca),
            certfile=str(cert) if cert else None,
            keyfile=str(key) if key else None,
        )
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.pubacks: queue.Queue[tuple[int, ReasonCode]] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.disconnected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self.connacks.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.client.on_publish = lambda c, u, mid, rc, p: self.pubacks.put((mid, rc))
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_disconnect = lambda *args: self.disconnected.set()

    def connect(self, port: int) -> str:
        """'ok', or why not: the TLS error, the CONNACK reason, or 'dropped'."""
        try:
            self.client.connect("localhost", port, keepalive=10)
        except (ssl.SSLError, OSError) as exc:
            return f"tls: {exc}"
        self.client.loop_start()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                rc = self.connacks.get(timeout=0.05)
            except queue.Empty:
                if self.disconnected.is_set():
                    return "dropped"
                continue
            return "ok" if not rc.is_failure else f"refused: {rc}"
        return "no connack"

    def subscribe(self, topic_filter: str) -> list[ReasonCode]:
        self.client.subscribe(topic_filter, qos=1)
        return self.subacks.get(timeout=TIMEOUT)

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        mid, rc = self.pubacks.get(timeout=TIMEOUT)
        assert mid == info.mid
        return rc

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def probe(broker: Broker, user: str, cert: str | None = None, ca: Path | None = None) -> Probe:
    name = cert or user
    return Probe(
        user, ca or broker.pki / "ca.crt", broker.pki / f"{name}.crt", broker.pki / f"{name}.key"
    )


def test_right_ca_and_client_cert_connect(broker: Broker) -> None:
    client = probe(broker, "edge-agent")
    assert client.connect(broker.port) == "ok"
    client.close()


def assert_refused_by_tls(outcome: str) -> None:
    """Refused in the handshake: either connect() failed (TLS 1.2, or our check
    of the server) or, with TLS 1.3, the server's alert dropped the connection
    right after it before any CONNACK."""
    assert outcome == "dropped" or outcome.startswith("tls: "), outcome


def test_wrong_ca_is_refused(broker: Broker) -> None:
    client = probe(broker, "edge-agent", ca=broker.wrong_pki / "ca.crt")
    outcome = client.connect(broker.port)
    assert outcome.startswith("tls: ") and "certificate verify failed" in outcome, outcome
    client.close()


def test_client_cert_from_another_ca_is_refused(broker: Broker) -> None:
    wrong = broker.wrong_pki
    client = Probe(
        "edge-agent", broker.pki / "ca.crt", wrong / "edge-agent.crt", wrong / "edge-agent.key"
    )
    assert_refused_by_tls(client.connect(broker.port))
    client.close()


def test_expired_client_cert_is_refused(broker: Broker) -> None:
    control = probe(broker, "edge-agent", cert="current")
    assert control.connect(broker.port) == "ok"
    control.close()
    client = probe(broker, "edge-agent", cert="expired")
    # TLS 1.3: the server rejects the certificate after the client's handshake
    # finished, so this shows up as a dropped connection rather than in connect().
    assert_refused_by_tls(client.connect(broker.port))
    client.close()


def test_missing_client_cert_is_refused(broker: Broker) -> None:
    client = Probe("edge-agent", broker.pki / "ca.crt", None, None)
    assert_refused_by_tls(client.connect(broker.port))
    client.close()


def test_wrong_password_is_refused(broker: Broker) -> None:
    client = probe(broker, "sensor1")
    client.client.username_pw_set("sensor1", "not-the-password")
    assert client.connect(broker.port).startswith("refused")
    client.close()


def expect(messages: queue.Queue[tuple[str, bytes]], topic: str) -> bytes:
    got_topic, payload = messages.get(timeout=TIMEOUT)
    assert got_topic == topic
    return payload


def test_acl(broker: Broker) -> None:
    agent, sensor, dashboard = (probe(broker, u) for u in ("edge-agent", "sensor1", "dashboard"))
    try:
        for client in (agent, sensor, dashboard):
            assert client.connect(broker.port) == "ok"
        for topic_filter in ("edge-agent/+/response/#", "edge-agent/+/request/#", "zigbee2mqtt/#"):
            assert not agent.subscribe(topic_filter)[0].is_failure

        # A device cannot answer for the agent, nor publish as another device ...
        assert sensor.publish("edge-agent/pi1/response/digits", b"forged").value == 135
        assert sensor.publish("zigbee2mqtt/sensor2", b"spoofed").value == 135
        assert sensor.publish("edge-agent/pi1/request/digits", b"not a client").value == 135
        # ... but publishes its own topic, and a client may send requests.
        assert not sensor.publish("zigbee2mqtt/sensor1", b'{"temperature": 21}').is_failure
        assert expect(agent.messages, "zigbee2mqtt/sensor1") == b'{"temperature": 21}'
        assert not dashboard.publish("edge-agent/pi1/request/digits", b"{}").is_failure
        assert expect(agent.messages, "edge-agent/pi1/request/digits") == b"{}"

        # The agent answers; the client reads it. A client cannot forge answers either.
        assert dashboard.subscribe("edge-agent/+/response/#")[0].value in (0, 1)
        assert dashboard.publish("edge-agent/pi1/response/digits", b"forged").value == 135
        assert not agent.publish("edge-agent/pi1/response/digits", b"answer").is_failure
        assert expect(dashboard.messages, "edge-agent/pi1/response/digits") == b"answer"
        # A device may not even listen to the agent's answers (mosquitto 2.0
        # grants the subscription but delivers nothing it may not read).
        sensor.subscribe("edge-agent/#")
        assert not agent.publish("edge-agent/pi1/response/digits", b"secret").is_failure
        assert expect(dashboard.messages, "edge-agent/pi1/response/digits") == b"secret"

        time.sleep(0.3)  # anything forged would have been delivered by now
        leaked: dict[str, list[Any]] = {"agent": [], "sensor": [], "dashboard": []}
        for name, client in zip(leaked, (agent, sensor, dashboard), strict=True):
            while not client.messages.empty():
                leaked[name].append(client.messages.get_nowait())
        answers = [("edge-agent/pi1/response/digits", b"answer")]
        answers.append(("edge-agent/pi1/response/digits", b"secret"))
        assert leaked == {"agent": answers, "sensor": [], "dashboard": []}  # agent: own echo
    finally:
        for client in (agent, sensor, dashboard):
            client.close()


# ----------------------------------------------------------------------------- the agent itself


def _agent_config(broker: Broker, tmp: Path, ca: Path, agent_id: str) -> Any:
    from agent.config import load_config
    from tests.helpers import DEPLOY_CONFIG

    secret = tmp / f"{agent_id}-pw"
    secret.write_text(USERS["edge-agent"])
    return load_config(
        DEPLOY_CONFIG,
        environ={
            "EDGE_AGENT_ID": agent_id,
            "EDGE_AGENT_MQTT__HOST": "localhost",
            "EDGE_AGENT_MQTT__PORT": str(broker.port),
            "EDGE_AGENT_MQTT__USERNAME": "edge-agent",
            "EDGE_AGENT_MQTT__PASSWORD_FILE": str(secret),
            "EDGE_AGENT_MQTT__TLS__ENABLED": "true",
            "EDGE_AGENT_MQTT__TLS__CA_FILE": str(ca),
            "EDGE_AGENT_MQTT__TLS__CERT_FILE": str(broker.pki / "edge-agent.crt"),
            "EDGE_AGENT_MQTT__TLS__KEY_FILE": str(broker.pki / "edge-agent.key"),
            "EDGE_AGENT_MQTT__RECONNECT__MIN_DELAY_S": "0.2",
        },
    )


def test_the_agent_serves_over_tls_with_a_client_cert(broker: Broker, tmp_path: Path) -> None:
    """The agent's own MQTT client: CA verification, client certificate, password, ACL."""
    import json

    from agent.app import Agent

    config = _agent_config(broker, tmp_path, broker.pki / "ca.crt", "tlsagent")
    config = config.model_copy(update={"cloud": config.cloud.model_copy(update={"url": None})})
    agent = Agent(config)
    agent.start(connect_timeout=10)
    client = probe(broker, "dashboard")
    try:
        assert agent.mqtt.connected
        assert client.connect(broker.port) == "ok"
        client.subscribe("edge-agent/tlsagent/response/#")
        grid = [
            [0, 0, 5, 13, 9, 1, 0, 0],
            [0, 0, 13, 15, 10, 15, 5, 0],
            [0, 3, 15, 2, 0, 11, 8, 0],
            [0, 4, 12, 0, 0, 8, 8, 0],
            [0, 5, 8, 0, 0, 9, 8, 0],
            [0, 4, 11, 0, 1, 12, 7, 0],
            [0, 2, 14, 5, 10, 12, 0, 0],
            [0, 0, 6, 13, 10, 0, 0, 0],
        ]
        request = json.dumps({"id": "tls-1", "input": {"pixels": grid}}).encode()
        assert not client.publish("edge-agent/tlsagent/request/digits", request).is_failure
        payload = expect(client.messages, "edge-agent/tlsagent/response/digits")
        answer = json.loads(payload)
        assert answer["ok"] and answer["result"]["label"] == "0"
    finally:
        client.close()
        agent.shutdown()


def test_the_agent_refuses_a_broker_signed_by_another_ca(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from agent.app import Agent

    config = _agent_config(broker, tmp_path, broker.wrong_pki / "ca.crt", "tlswrong")
    config = config.model_copy(update={"cloud": config.cloud.model_copy(update={"url": None})})
    agent = Agent(config)
    with caplog.at_level("WARNING", logger="agent.mqtt.client"):
        agent.start(connect_timeout=1.5)
        try:
            assert not agent.mqtt.connected
        finally:
            agent.shutdown()
    assert "TLS certificate verification failed" in caplog.text
