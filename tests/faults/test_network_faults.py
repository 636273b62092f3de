"""The network between agent and broker cut and restored with a TCP proxy we control:
`reset` (connections die at once, new ones refused) and `blackhole` (bytes stop, nothing is
closed: only keepalive notices)."""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path

import pytest

from agent.devtools.broker import Mosquitto
from agent.devtools.tcpproxy import TcpProxy
from tests.faults.harness import AgentProcess, LoadClient, report, size


@pytest.mark.parametrize("mode", ["reset", "blackhole"])
def test_network_cut_and_restored(tmp_path: Path, cloud_url: str, mode: str) -> None:
    rate = size(100, 300)
    cuts = int(size(2, 5))
    # A blackhole is noticed by keepalive only: paho sends PINGREQ after 5 s without bytes
    # in and gives up 5 s later, so a cut must outlast 10 s (plus a loop turn) for the
    # reconnect below to be certain; at 9 s it raced the restore.
    cut_s = size(3.0, 10.0) if mode == "reset" else size(12.0, 15.0)
    gap = 7.0  # up between cuts for longer than the reconnect backoff's cap (5 s)
    duration = cuts * (cut_s + gap) + 2.0
    with Mosquitto() as broker, TcpProxy(broker.host, broker.port) as proxy:
        agent = AgentProcess(
            proxy.port, cloud_url, tmp_path, env={"EDGE_AGENT_MQTT__KEEPALIVE_S": "5"}
        )
        with LoadClient(broker.host, broker.port, agent.agent_id) as client:
            since = time.monotonic()
            agent.start()
            assert client.wait_status(b"online", since, 30), agent.output()
            try:

                def faults() -> None:
                    for _ in range(cuts):
                        time.sleep(gap * random.uniform(0.8, 1.0))
                        proxy.cut(mode)  # type: ignore[arg-type]
                        time.sleep(cut_s)
                        proxy.restore()

                ids = client.stream_during(faults, rate, duration)
                client.wait_answered(ids, 60)
                figures = report(
                    client.figures(
                        f"network {mode} x{cuts} of {cut_s:.0f}s @ {rate:.0f} req/s",
                        ids,
                        agent_connections=proxy.connections,
                    )
                )
                assert figures.lost == 0, agent.output() + broker.log()
                assert proxy.connections > cuts, "the agent reconnected after every cut"
            finally:
                agent.stop()


def test_proxy_cut_and_restore_basics() -> None:
    """The proxy itself: forwards, resets, refuses while cut, forwards again."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    with TcpProxy("127.0.0.1", server.getsockname()[1]) as proxy:
        a = socket.create_connection((proxy.host, proxy.port), timeout=2)
        b, _ = server.accept()
        a.sendall(b"ping")
        assert b.recv(4) == b"ping"
        proxy.cut("reset")
        a.settimeout(2)
        with contextlib.suppress(ConnectionResetError):  # reset: what a dead link looks like
            assert a.recv(1) == b"", "closed"
        with pytest.raises(OSError):  # refused while cut
            refused = socket.create_connection((proxy.host, proxy.port), timeout=2)
            refused.settimeout(2)
            if refused.recv(1) == b"":
                raise ConnectionResetError
        proxy.restore()
        c = socket.create_connection((proxy.host, proxy.port), timeout=2)
        d, _ = server.accept()
        proxy.cut("blackhole")
        c.sendall(b"held")
        d.settimeout(0.3)
        with pytest.raises(TimeoutError):
            d.recv(4)
        proxy.restore()
        d.settimeout(2)
        assert d.recv(4) == b"held"
        for s in (a, b, c, d):
            s.close()
    server.close()
