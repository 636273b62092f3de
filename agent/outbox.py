"""The durable outbox: messages that cannot reach the broker now wait on disk, in order.

SQLite in WAL mode under the state directory. One writer thread owns all writes and commits
whatever has accumulated while the previous commit was syncing (group commit), so a burst of
results costs a few fsyncs, not one each. `put` returns at once; its `on_stored` callback
runs after the commit that made the message durable: the engine acknowledges the inbound
request there, so a request is never acknowledged before its answer is on disk.

Durability (`outbox.durability`): `full` (SQLite `synchronous=FULL`) survives SIGKILL and
power loss; `normal` survives SIGKILL and never corrupts, but the last commits before a
power cut may be missing (their requests are then redelivered by the broker, not lost).

The store is bounded by count, bytes and age. When full, `drop_oldest` deletes the oldest
waiting messages and `reject_new` refuses the new one (its request stays unacknowledged, so
the broker keeps it). Every drop is counted, logged (rate-limited) and in `stats()`.

`Relay` sits between the MQTT client and the broker: straight through while connected and
nothing waits; into the outbox otherwise; and it drains the outbox in order once the
connection is back, deleting each row when the broker acknowledges it.

The same database holds the persistent half of the de-duplication window (agent/dedupe.py):
the ids already answered, with their answers, for replay.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Durability = Literal["full", "normal"]
DropPolicy = Literal["drop_oldest", "reject_new"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    correlation BLOB
);
CREATE TABLE IF NOT EXISTS answered (
    key TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    correlation BLOB
);
CREATE INDEX IF NOT EXISTS answered_ts ON answered(ts);
"""
_BATCH = 1024  # most operations per transaction
_MAINTENANCE_S = 1.0
_LAZY_S = 0.2


@dataclass(frozen=True)
class OutMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    correlation_data: bytes | None = None


@dataclass(frozen=True)
class Row:
    seq: int
    created: float
    message: OutMessage


@dataclass
class _Put:
    seq: int
    created: float
    message: OutMessage
    on_stored: Callable[[], None] | None


class Outbox:
    def __init__(
        self,
        path: Path,
        *,
        durability: Durability = "full",
        max_messages: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        max_age_s: float = 86_400.0,
        drop_policy: DropPolicy = "drop_oldest",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.durability = durability
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.drop_policy = drop_policy
        self._clock = clock
        self._db = _open(path, durability)
        self._db_lock = threading.Lock()
        self._cond = threading.Condition()
        self._puts: list[_Put] = []
        self._deletes: list[int] = []
        self._remember: dict[str, tuple[float, OutMessage]] = {}
        self._prune: tuple[float, int] | None = None
        self._lazy_since: float | None = None
        self._urgent = False
        self._remembered: list[Callable[[], None]] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[], None]] = []
        count, size, last = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), COALESCE(MAX(seq), 0) FROM outbox"
        ).fetchone()
        self._count = int(count)  # committed rows
        self._committing = 0  # rows taken by the commit under way
        self._bytes = int(size)
        self._pending_bytes = 0
        self._next_seq = int(last) + 1
        self.committed_seq = int(last)
        self.counters: dict[str, int] = {
            "stored": 0,
            "delivered": 0,
            "dropped_full": 0,
            "dropped_expired": 0,
            "rejected_full": 0,
            "dropped_poison": 0,
            "commits": 0,
        }
        self._last_drop_log = 0.0
        if self._count:
            log.info("outbox %s holds %d message(s) from before the restart", path, self._count)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Outbox:
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is pending, then close the database."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self._flush()
        with self._db_lock:
            self._db.close()

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Run `listener` (on the writer thread) after each commit that stored messages."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ writes (any thread)

    def put(self, message: OutMessage, on_stored: Callable[[], None] | None = None) -> bool:
        """Queue `message` for the next commit; `on_stored` runs once it is on disk.
        False when the outbox is full and the policy is `reject_new` (nothing is stored)."""
        size = len(message.payload)
        with self._cond:
            if self._closing:
                return False
            if self.drop_policy == "reject_new" and (
                self._count + self._committing + len(self._puts) >= self.max_messages
                or self._bytes + self._pending_bytes + size > self.max_bytes
            ):
                self.counters["rejected_full"] += 1
                self._log_drop("outbox full: refused a message for %s", message.topic)
                return False
            self._puts.append(_Put(self._next_seq, self._clock(), message, on_stored))
            self._next_seq += 1
            self._pending_bytes += size
            self._cond.notify_all()
        return True

    def delete(self, seq: int) -> None:
        """The broker has the message `seq`: forget it (batched)."""
        with self._cond:
            self._deletes.append(seq)
            self._wake_lazy()

    def remember(
        self,
        key: str,
        ts: float,
        answer: OutMessage,
        on_committed: Callable[[], None] | None = None,
    ) -> None:
        """Store the answer to request `key` (the persistent de-duplication window);
        `on_committed` runs once it is on disk. Batched with a short delay, except when the
        answer itself was just stored here (called from an `on_stored` callback): then in
        the very next commit, to keep the gap between the two small."""
        with self._cond:
            self._remember[key] = (ts, answer)
            if on_committed is not None:
                self._remembered.append(on_committed)
            if threading.current_thread() is self._thread:
                self._urgent = True
                self._cond.notify_all()
            else:
                self._wake_lazy()

    def _wake_lazy(self) -> None:
        """A deletion or remembered answer was queued (with `_cond` held): wake the writer
        only if it is not already timing the lazy batch or the batch is full; a wake-up per
        request costs more CPU than the request itself at low load."""
        if self._lazy_since is None or len(self._deletes) + len(self._remember) >= _BATCH:
            self._cond.notify_all()

    def prune_answered(self, before: float, keep: int) -> None:
        """Forget answers older than `before` and all but the newest `keep` (batched)."""
        with self._cond:
            self._prune = (before, keep)
            self._cond.notify_all()

    # ------------------------------------------------------------------ reads (any thread)

    @property
    def last_seq(self) -> int:
        """The newest sequence number handed out (committed or not). Read without the lock
        (the relay asks on every publish): an int attribute read is atomic, and it only grows."""
        return self._next_seq - 1

    def __len__(self) -> int:
        with self._cond:
            return self._count + self._committing + len(self._puts)

    def fetch(self, after: int, limit: int) -> list[Row]:
        """Committed messages with seq > `after`, oldest first."""
        with self._db_lock:
            rows = self._db.execute(
                "SELECT seq, created, topic, payload, qos, retain, correlation FROM outbox "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [
            Row(seq, created, OutMessage(topic, bytes(payload), qos, bool(retain), corr))
            for seq, created, topic, payload, qos, retain, corr in rows
        ]

    def answered(self, since: float, limit: int) -> list[tuple[str, float]]:
        """(key, ts) of remembered answers newer than `since`, newest last."""
        with self._db_lock:
            rows = self._db.execute(
                "SELECT key, ts FROM (SELECT key, ts FROM answered WHERE ts >= ? "
                "ORDER BY ts DESC LIMIT ?) ORDER BY ts",
                (since, limit),
            ).fetchall()
        return [(str(k), float(t)) for k, t in rows]

    def lookup(self, key: str) -> OutMessage | None:
        """The remembered answer to `key`, if any."""
        with self._cond:
            pending = self._remember.get(key)
        if pending is not None:
            return pending[1]
        with self._db_lock:
            row = self._db.execute(
                "SELECT topic, payload, qos, correlation FROM answered WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return OutMessage(row[0], bytes(row[1]), int(row[2]), False, row[3])

    def stats(self) -> dict[str, object]:
        with self._cond:
            return {
                "queued": self._count + self._committing + len(self._puts),
                "bytes": self._bytes + self._pending_bytes,
                "durability": self.durability,
                **self.counters,
            }

    # ------------------------------------------------------------------ writer thread

    def _due(self) -> float:
        """Seconds until the next commit is due (0: now). Stored messages are urgent (their
        requests wait for the commit); deletions and remembered answers wait up to
        `_LAZY_S` to share a commit, which spares fsyncs (and SD cards)."""
        if self._puts or self._prune or self._closing or self._urgent:
            return 0.0
        lazy = len(self._deletes) + len(self._remember)
        if not lazy:
            return _MAINTENANCE_S
        if lazy >= _BATCH:
            return 0.0
        if self._lazy_since is None:
            self._lazy_since = time.monotonic()
        return max(0.0, self._lazy_since + _LAZY_S - time.monotonic())

    def _run(self) -> None:
        next_maintenance = time.monotonic() + _MAINTENANCE_S
        while True:
            with self._cond:
                while (due := self._due()) > 0:
                    left = min(due, next_maintenance - time.monotonic())
                    if left <= 0:
                        break
                    self._cond.wait(left)
                self._lazy_since = None
                closing = self._closing
            try:
                self._flush()
                if time.monotonic() >= next_maintenance:
                    next_maintenance = time.monotonic() + _MAINTENANCE_S
                    self._expire()
            except sqlite3.Error:
                log.exception("outbox write failed; retrying")
                time.sleep(0.5)
                continue
            if closing:
                with self._cond:
                    if not (self._puts or self._deletes or self._remember or self._prune):
                        return

    def _flush(self) -> None:
        with self._cond:
            puts, self._puts = self._puts[:_BATCH], self._puts[_BATCH:]
            self._committing = len(puts)
            deletes, self._deletes = self._deletes, []
            remember, self._remember = self._remember, {}
            remembered, self._remembered = self._remembered, []
            self._urgent = False
            prune, self._prune = self._prune, None
        if not (puts or deletes or remember or prune):
            return
        try:
            with self._db_lock, _transaction(self._db):
                if puts:
                    self._db.executemany(
                        "INSERT INTO outbox (seq, created, topic, payload, qos, retain, "
                        "correlation) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [
                            (
                                p.seq,
                                p.created,
                                p.message.topic,
                                p.message.payload,
                                p.message.qos,
                                int(p.message.retain),
                                p.message.correlation_data,
                            )
                            for p in puts
                        ],
                    )
                gone = self._delete_rows(deletes) if deletes else (0, 0)
                if remember:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO answered (key, ts, topic, payload, qos, "
                        "correlation) VALUES (?, ?, ?, ?, ?, ?)",
                        [
                            (k, ts, a.topic, a.payload, a.qos, a.correlation_data)
                            for k, (ts, a) in remember.items()
                        ],
                    )
                if prune is not None:
                    # Both bounds through the index on ts: a NOT IN over the newest `keep`
                    # keys sorted the whole table, tens of ms of CPU every prune.
                    self._db.execute("DELETE FROM answered WHERE ts < ?", (prune[0],))
                    row = self._db.execute(
                        "SELECT ts FROM answered ORDER BY ts DESC LIMIT 1 OFFSET ?",
                        (max(0, prune[1] - 1),),
                    ).fetchone()
                    if row is not None:
                        self._db.execute("DELETE FROM answered WHERE ts < ?", (row[0],))
                dropped = self._enforce_bounds(len(puts), sum(len(p.message.payload) for p in puts))
        except sqlite3.Error:
            with self._cond:  # put everything back for the retry, in order
                self._committing = 0
                self._puts[:0] = puts
                self._deletes[:0] = deletes
                for key, value in remember.items():
                    self._remember.setdefault(key, value)
                self._remembered[:0] = remembered
                if prune is not None and self._prune is None:
                    self._prune = prune
            raise
        with self._cond:
            added = sum(len(p.message.payload) for p in puts)
            self._pending_bytes -= added
            self._committing = 0
            self._count += len(puts) - gone[0] - dropped[0]
            self._bytes += added - gone[1] - dropped[1]
            self.counters["stored"] += len(puts)
            self.counters["delivered"] += gone[0]
            self.counters["commits"] += 1
            if puts:
                self.committed_seq = puts[-1].seq
        for callback in [p.on_stored for p in puts if p.on_stored] + remembered:
            try:
                callback()
            except Exception:
                log.exception("outbox commit callback failed")
        if puts:
            for listener in self._listeners:
                listener()

    def _delete_rows(self, seqs: list[int]) -> tuple[int, int]:
        count = size = 0
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            n, b = self._db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox "
                f"WHERE seq IN ({marks})",
                chunk,
            ).fetchone()
            self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", chunk)
            count, size = count + int(n), size + int(b)
        return count, size

    def _enforce_bounds(self, added: int, added_bytes: int) -> tuple[int, int]:
        """drop_oldest: delete the oldest rows while over a bound (inside the transaction)."""
        with self._cond:
            count = self._count + added
            size = self._bytes + added_bytes
        dropped = dropped_bytes = 0
        while count > self.max_messages or size > self.max_bytes:
            rows = self._db.execute(
                "SELECT seq, LENGTH(payload) FROM outbox ORDER BY seq LIMIT 256"
            ).fetchall()
            if not rows:
                break
            last = 0
            for seq, length in rows:
                if count <= self.max_messages and size <= self.max_bytes:
                    break
                last, count, size = seq, count - 1, size - int(length)
                dropped, dropped_bytes = dropped + 1, dropped_bytes + int(length)
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (last,))
        if dropped:
            with self._cond:
                self.counters["dropped_full"] += dropped
            self._log_drop("outbox full: dropped the %d oldest message(s)", dropped)
        return dropped, dropped_bytes

    def _expire(self) -> None:
        cutoff = self._clock() - self.max_age_s
        with self._db_lock, _transaction(self._db):
            n, b = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox WHERE created < ?",
                (cutoff,),
            ).fetchone()
            if n:
                self._db.execute("DELETE FROM outbox WHERE created < ?", (cutoff,))
        if n:
            with self._cond:
                self._count -= int(n)
                self._bytes -= int(b)
                self.counters["dropped_expired"] += int(n)
            self._log_drop("outbox: dropped %d message(s) older than max_age_s", int(n))

    def drop_poison(self, seq: int) -> None:
        """A stored message the broker can never take (e.g. an invalid topic)."""
        with self._cond:
            self.counters["dropped_poison"] += 1
        self.delete(seq)

    def _log_drop(self, msg: str, *args: object) -> None:
        """WARNING at most every 10 s: every drop is counted in `stats()` anyway."""
        now = time.monotonic()
        if now - self._last_drop_log >= 10.0:
            self._last_drop_log = now
            log.warning(msg, *args)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One explicit transaction: a batch costs one commit (one fsync with FULL)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _open(path: Path, durability: Durability) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        db = _connect(path, durability)
    except sqlite3.DatabaseError:  # not a database at all
        db = None
    try:
        ok = db is not None and db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        ok = False
    if db is None or not ok:
        if db is not None:
            db.close()
        broken = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.error("outbox %s is corrupt; moved it to %s and started empty", path, broken)
        path.rename(broken)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(broken.with_name(broken.name + suffix))
        db = _connect(path, durability)
    db.executescript(_SCHEMA)
    return db


def _connect(path: Path, durability: Durability) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; `_transaction` opens them explicitly.
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
    return db


# ---------------------------------------------------------------------------------- relay

SendResult = Literal["sent", "offline", "refused"]
SendFn = Callable[[OutMessage, Callable[[], None]], SendResult]
"""Publish now; the callback runs when the broker has the message. `offline`: the client
cannot take it now (store it); `refused`: it never will (e.g. an invalid topic)."""


class Relay:
    """Keeps results in order across disconnects, and on disk only while the link is down.

    Link up and nothing waiting: `publish` sends straight through. Link down: the message
    goes to the outbox. Link back up: a drain thread hands the stored messages to `send`
    oldest first (at most `window` unacknowledged) and deletes each when the broker
    acknowledges it; messages published meanwhile wait in memory behind them (their
    requests are not acknowledged before their PUBACK either, so memory is enough) and are
    sent next. Should the link drop again, those move to the outbox, still in order.

    A message handed over but not acknowledged when the link drops stays with the MQTT
    client, which resends it on reconnect; after a crash it is handed over again (at least
    once, never lost).
    """

    def __init__(
        self, outbox: Outbox, send: SendFn, window: int = 100, max_waiting: int = 10_000
    ) -> None:
        self.outbox = outbox
        self._send = send
        self._window = window
        self._max_waiting = max_waiting
        self._lock = threading.Lock()  # orders direct sends against drained ones
        self._cond = threading.Condition()
        self._cursor = 0  # every stored seq <= cursor was handed over (or dropped)
        self._waiting: deque[tuple[OutMessage, Callable[[], None] | None]] = deque()
        self._unacked = 0
        self._up = False
        self._stop = False
        self._thread: threading.Thread | None = None
        outbox.on_commit(self.wake)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._drain, name="outbox-drain", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(2.0)
        with self._lock:
            self._store_waiting()  # results not sent yet: on disk for the next start

    def link(self, up: bool) -> None:
        """The MQTT link is up (the broker accepts publishes) or down."""
        with self._cond:
            self._up = up
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def backlog(self) -> int:
        """Messages not handed to the MQTT client yet (stored: an upper bound)."""
        return max(0, self.outbox.last_seq - self._cursor) + len(self._waiting)

    def publish(self, message: OutMessage, on_delivered: Callable[[], None] | None) -> bool:
        """Send, queue or store `message`. False when it was refused or the outbox is full."""
        with self._lock:
            if self._up:
                if self.outbox.last_seq <= self._cursor and not self._waiting:
                    result = self._send(message, on_delivered or _nothing)
                    if result != "offline":
                        return result == "sent"
                elif len(self._waiting) < self._max_waiting:
                    self._waiting.append((message, on_delivered))
                    self.wake()
                    return True
            self._store_waiting()
            return self.outbox.put(message, on_delivered)

    def _store_waiting(self) -> None:
        """Move the in-memory queue to the outbox, in order (the link is down or the queue
        is full). Called with `_lock` held."""
        while self._waiting:
            message, on_delivered = self._waiting.popleft()
            if not self.outbox.put(message, on_delivered):
                log.warning("outbox full: a result waiting for the link was not stored")

    def _drain(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not (
                    (self._up and self._unacked < self._window and self._has_work())
                    or (not self._up and self._waiting)
                ):
                    self._cond.wait(0.5)
                if self._stop:
                    return
                free = self._window - self._unacked
            if not self._up:
                with self._lock:
                    self._store_waiting()
                continue
            rows: list[Row] = []
            if self.outbox.committed_seq > self._cursor:
                try:
                    rows = self.outbox.fetch(self._cursor, free)
                except sqlite3.Error:
                    log.exception("cannot read the outbox")
                    time.sleep(0.5)
                    continue
            if not self._hand_over(rows, free):
                time.sleep(0.05)  # the client went offline: handed over again once it is back

    def _has_work(self) -> bool:
        return self.outbox.committed_seq > self._cursor or bool(
            self._waiting and self.outbox.last_seq <= self._cursor
        )

    def _hand_over(self, rows: list[Row], free: int) -> bool:
        """Send stored `rows` in order, then (once nothing stored waits) what waits in
        memory. False when the client went offline meanwhile."""
        with self._lock:
            if not rows and self.outbox.committed_seq > self._cursor:
                # everything up to the committed seq was dropped meanwhile
                self._cursor = self.outbox.committed_seq
            for row in rows:
                result = self._send_counted(row.message, partial(self._acked, row.seq))
                if result == "offline":
                    return False
                if result == "refused":
                    log.warning("dropping stored message for %s: refused", row.message.topic)
                    self.outbox.drop_poison(row.seq)
                self._cursor = row.seq
                free -= 1
            while free > 0 and self._waiting and self.outbox.last_seq <= self._cursor:
                message, on_delivered = self._waiting[0]
                done = partial(self._acked, None, on_delivered)
                if self._send_counted(message, done) == "offline":
                    return False
                self._waiting.popleft()
                free -= 1
        return True

    def _send_counted(self, message: OutMessage, done: Callable[[], None]) -> SendResult:
        if not self._up:
            return "offline"
        with self._cond:
            self._unacked += 1
        result = self._send(message, done)
        if result != "sent":
            with self._cond:
                self._unacked -= 1
        return result

    def _acked(self, seq: int | None, on_delivered: Callable[[], None] | None = None) -> None:
        if seq is not None:
            self.outbox.delete(seq)
        with self._cond:
            self._unacked -= 1
            self._cond.notify_all()
        if on_delivered is not None:
            on_delivered()


def _nothing() -> None:
    return None
