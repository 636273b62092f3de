"""De-duplication of requests by id: one answer per request, even when QoS 1 redelivers.

QoS 1 is at-least-once: after a reconnect (or a broker or agent restart) the broker sends
again every request the agent had not acknowledged, with the DUP flag set. The agent
acknowledges a request only once its answer is delivered or stored, so a redelivered copy
is either still being worked on (`inflight`: it is acknowledged together with the original)
or already answered (`answered`: acknowledged at once, no second answer).

A copy *without* the DUP flag is a new publish by the requester reusing the id: a retry
after a lost answer (e.g. a broker crash lost it). With `replay` on it gets the stored
answer again, byte for byte, like an idempotency key; otherwise it is dropped too.

The window is bounded (`max_entries`, `window_s`). With a store it survives restarts: the
answers live in the outbox database (agent/outbox.py), written in batches after delivery,
and the newest ids are loaded at start. Ids must be unique per agent and task within the
window; a reused id inside it is taken for a copy.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Generic, Literal, Protocol, TypeVar

from agent.outbox import OutMessage

Verdict = Literal["new", "inflight", "answered"]
M = TypeVar("M")

_PRUNE_EVERY = 1000  # completions between prunes of the persistent window


class AnsweredStore(Protocol):
    def answered(self, since: float, limit: int) -> list[tuple[str, float]]: ...

    def remember(
        self,
        key: str,
        ts: float,
        answer: OutMessage,
        on_committed: Callable[[], None] | None = None,
    ) -> None: ...

    def lookup(self, key: str) -> OutMessage | None: ...

    def prune_answered(self, before: float, keep: int) -> None: ...


class Dedupe(Generic[M]):
    def __init__(
        self,
        store: AnsweredStore | None = None,
        *,
        max_entries: int = 20_000,
        window_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.max_entries = max_entries
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._answered: OrderedDict[str, float] = OrderedDict()  # key -> when, oldest first
        self._answers: OrderedDict[str, OutMessage] = OrderedDict()  # recent, for replay
        self._inflight: dict[str, list[M]] = {}  # key -> copies waiting for the original
        self._completions = 0
        self.counters: dict[str, int] = {"copies_inflight": 0, "copies_answered": 0}
        if store is not None:
            for key, ts in store.answered(clock() - window_s, max_entries):
                self._answered[key] = ts

    def begin(self, key: str, message: M) -> Verdict:
        """Register a request. `new`: process it. `inflight`: a copy of one being processed
        (returned by `complete` for acknowledgement). `answered`: a copy of one answered."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            if key in self._answered:
                self.counters["copies_answered"] += 1
                return "answered"
            copies = self._inflight.get(key)
            if copies is not None:
                copies.append(message)
                self.counters["copies_inflight"] += 1
                return "inflight"
            self._inflight[key] = []
            return "new"

    def complete(
        self,
        key: str,
        answer: OutMessage | None,
        on_durable: Callable[[list[M]], None] | None = None,
    ) -> list[M]:
        """The answer to `key` was delivered or stored. Returns the copies that arrived
        meanwhile; or, with `on_durable`, hands them to it once `key` is remembered on disk
        (acknowledge requests there: a crash before it means a redelivery, which the
        window then recognises). `answer` is kept for replay."""
        now = self._clock()
        with self._lock:
            copies = self._inflight.pop(key, [])
            self._answered[key] = now
            self._answered.move_to_end(key)
            if answer is not None:
                self._answers[key] = answer
                while len(self._answers) > min(self.max_entries, 1024):
                    self._answers.popitem(last=False)
            while len(self._answered) > self.max_entries:
                old, _ = self._answered.popitem(last=False)
                self._answers.pop(old, None)
            self._completions += 1
            prune = self._completions % max(_PRUNE_EVERY, self.max_entries // 4) == 0
        if self._store is not None and prune:
            self._store.prune_answered(now - self.window_s, self.max_entries)
        if on_durable is None:
            if self._store is not None and answer is not None:
                self._store.remember(key, now, answer)
            return copies
        if self._store is not None and answer is not None:
            self._store.remember(key, now, answer, partial(on_durable, copies))
        else:
            on_durable(copies)
        return []

    def abandon(self, key: str) -> list[M]:
        """The original could not be answered (its publish was refused): forget it, so a
        copy is processed again. Returns the copies that arrived meanwhile."""
        with self._lock:
            return self._inflight.pop(key, [])

    def answer_of(self, key: str) -> OutMessage | None:
        with self._lock:
            answer = self._answers.get(key)
        if answer is None and self._store is not None:
            answer = self._store.lookup(key)
        return answer

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "window": len(self._answered),
                "inflight": len(self._inflight),
                **self.counters,
            }

    def _expire(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._answered:
            key, ts = next(iter(self._answered.items()))
            if ts >= cutoff:
                break
            self._answered.popitem(last=False)
            self._answers.pop(key, None)
