"""The durable outbox and its relay: order, bounds, drop policy, and SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.outbox import Outbox, OutMessage, Relay, SendResult


def _msg(i: int, size: int = 8) -> OutMessage:
    return OutMessage(f"t/{i % 3}", str(i).encode().ljust(size, b"."), 1)


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def test_put_commits_in_batches_and_calls_back_after_the_commit(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3").start()
    stored: list[int] = []
    for i in range(500):
        assert box.put(_msg(i), on_stored=lambda i=i: stored.append(i))  # type: ignore[misc]
    assert _wait(lambda: len(stored) == 500)
    assert stored == list(range(500)), "callbacks in order"
    assert box.counters["commits"] < 500, "group commit"
    rows = box.fetch(0, 1000)
    assert [int(r.message.payload.rstrip(b".")) for r in rows] == list(range(500))
    box.close()
    again = Outbox(tmp_path / "o.sqlite3")
    assert len(again) == 500 and again.last_seq == 500
    again.close()


def test_wal_mode_and_durability_setting(tmp_path: Path) -> None:
    for durability, level in (("full", 2), ("normal", 1)):
        box = Outbox(tmp_path / f"{durability}.sqlite3", durability=durability)  # type: ignore[arg-type]
        assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == level
        box.close()


def test_drop_oldest_keeps_the_newest_and_counts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_messages=100).start()
    for i in range(250):
        box.put(_msg(i))
    assert _wait(lambda: box.counters["stored"] == 250)
    rows = box.fetch(0, 1000)
    assert len(rows) == 100 and len(box) == 100
    assert int(rows[0].message.payload.rstrip(b".")) == 150
    assert box.counters["dropped_full"] == 150
    assert box.stats()["dropped_full"] == 150
    box.close()


def test_byte_bound(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_bytes=10_000).start()
    for i in range(100):
        box.put(_msg(i, size=1000))
    assert _wait(lambda: box.counters["stored"] == 100)
    assert box.stats()["bytes"] <= 10_000  # type: ignore[operator]
    assert len(box.fetch(0, 1000)) == 10
    box.close()


def test_reject_new_refuses_synchronously(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_messages=10, drop_policy="reject_new").start()
    accepted = [box.put(_msg(i)) for i in range(15)]
    assert accepted == [True] * 10 + [False] * 5
    assert box.counters["rejected_full"] == 5
    assert _wait(lambda: box.counters["stored"] == 10)
    assert [int(r.message.payload.rstrip(b".")) for r in box.fetch(0, 100)] == list(range(10))
    box.close()


def test_age_bound(tmp_path: Path) -> None:
    now = [1000.0]
    box = Outbox(tmp_path / "o.sqlite3", max_age_s=60, clock=lambda: now[0]).start()
    box.put(_msg(1))
    now[0] += 30
    box.put(_msg(2))
    assert _wait(lambda: box.counters["stored"] == 2)
    now[0] += 45  # the first is 75 s old, the second 45 s
    assert _wait(lambda: box.counters["dropped_expired"] == 1, timeout=3)
    assert [int(r.message.payload.rstrip(b".")) for r in box.fetch(0, 10)] == [2]
    box.close()


def test_a_corrupt_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    box = Outbox(path)
    assert len(box) == 0
    assert list(tmp_path.glob("o.sqlite3.corrupt-*"))
    box.close()


class FakeLink:
    """A `send` for the relay: records what was sent; acks on demand."""

    def __init__(self) -> None:
        self.up = True
        self.sent: list[OutMessage] = []
        self.pending: list[Callable[[], None]] = []
        self.lock = threading.Lock()

    def send(self, message: OutMessage, on_delivered: Callable[[], None]) -> SendResult:
        with self.lock:
            if not self.up:
                return "offline" if message.qos == 0 else "sent"
            self.sent.append(message)
            self.pending.append(on_delivered)
        return "sent"

    def ack_all(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for callback in pending:
            callback()


def test_relay_stores_while_down_and_drains_in_order_before_new_messages(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "o.sqlite3").start()
    link = FakeLink()
    relay = Relay(box, link.send, window=7)
    relay.start()
    relay.link(True)
    delivered: list[int] = []
    assert relay.publish(_msg(0), lambda: delivered.append(0))
    link.ack_all()
    assert delivered == [0] and len(box) == 0
    relay.link(False)
    for i in range(1, 51):
        assert relay.publish(_msg(i), lambda i=i: delivered.append(i))  # type: ignore[misc]
    assert _wait(lambda: len(delivered) == 51), "stored results count as delivered"
    relay.link(True)
    for i in range(51, 61):  # published while the backlog drains: queued behind it
        relay.publish(_msg(i), None)
    assert relay.backlog > 0
    end = time.monotonic() + 10
    while time.monotonic() < end and len(link.sent) < 61:
        link.ack_all()
        time.sleep(0.01)
    link.ack_all()
    order = [int(m.payload.rstrip(b".")) for m in link.sent]
    assert order == list(range(61))
    assert _wait(lambda: len(box) == 0 and box.counters["delivered"] == 50)
    assert box.counters["stored"] == 50, "the link was up for the last ten: memory, not disk"
    relay.stop()
    box.close()


def test_relay_moves_waiting_messages_to_disk_when_the_link_drops(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3").start()
    link = FakeLink()
    relay = Relay(box, link.send, window=1)
    relay.start()
    for i in range(5):  # stored while down
        relay.publish(_msg(i), None)
    assert _wait(lambda: box.counters["stored"] == 5)
    relay.link(True)
    for i in range(5, 10):  # wait in memory behind the stored ones (window 1: slow drain)
        relay.publish(_msg(i), None)
    relay.link(False)
    relay.publish(_msg(10), None)
    assert _wait(lambda: box.counters["stored"] >= 10)
    relay.link(True)
    end = time.monotonic() + 10
    while time.monotonic() < end and len(link.sent) < 11:
        link.ack_all()
        time.sleep(0.01)
    order = [int(m.payload.rstrip(b".")) for m in link.sent]
    assert sorted(set(order)) == list(range(11)) and order == sorted(order), order
    relay.stop()
    box.close()


def test_relay_resumes_after_restart_without_losing_unacked_rows(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3").start()
    for i in range(20):
        box.put(_msg(i))
    assert _wait(lambda: box.counters["stored"] == 20)
    link = FakeLink()
    relay = Relay(box, link.send, window=5)
    relay.start()
    relay.link(True)
    assert _wait(lambda: len(link.sent) == 5)  # the window: 5 handed over, none acked
    time.sleep(0.1)
    assert len(link.sent) == 5
    relay.stop()
    box.close()  # "crash" before any PUBACK: all 20 are still there
    box2 = Outbox(tmp_path / "o.sqlite3").start()
    assert len(box2) == 20
    link2 = FakeLink()
    relay2 = Relay(box2, link2.send, window=100)
    relay2.start()
    relay2.link(True)
    assert _wait(lambda: len(link2.sent) == 20)
    assert [int(m.payload.rstrip(b".")) for m in link2.sent] == list(range(20))
    link2.ack_all()
    assert _wait(lambda: len(box2) == 0)
    relay2.stop()
    box2.close()


_WRITER = r"""
import sys, time
from pathlib import Path
from agent.outbox import Outbox, OutMessage
box = Outbox(Path(sys.argv[1]), durability=sys.argv[2]).start()
i = 0
def stored(i):
    sys.stdout.write(f"{i}\n"); sys.stdout.flush()
while True:
    box.put(OutMessage("t", str(i).encode() * 20, 1), on_stored=lambda i=i: stored(i))
    i += 1
    if i % 50 == 0:
        time.sleep(0.001)
"""


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_sigkill_mid_write_keeps_every_acknowledged_message(
    tmp_path: Path, durability: str
) -> None:
    """Everything whose on_stored ran (i.e. whose request would have been acknowledged)
    is on disk after SIGKILL, and the file opens cleanly."""
    path = tmp_path / "o.sqlite3"
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), durability],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        time.sleep(0.8 + 0.3 * round_)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        acknowledged = [int(x) for x in out.split()]
        assert acknowledged, "the writer stored something"
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT payload FROM outbox").fetchall()
        on_disk = {int(bytes(p)[: len(bytes(p)) // 20]) for (p,) in rows}
        db.close()
        missing = set(acknowledged) - on_disk
        assert not missing, f"round {round_}: {len(missing)} acknowledged messages lost"
        print(f"SIGKILL round {round_} ({durability}): {len(acknowledged)} acknowledged, 0 lost")
