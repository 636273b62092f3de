"""A device's results go out in window order, whichever thread answers first.

The engine answers device windows on whichever worker, cloud or timer thread finishes
first: with two workers, or a window that waits for the cloud, a later window can be
answered before an earlier one. Published as answered, the retained result topic would end
on the older window (Home Assistant showing a stale state), and results stored in the
outbox during a broker outage would be replayed in that wrong order.

So each device and task has a `ResultOrder`: the hub thread takes a ticket per window, in
window order; an answer waits until every earlier ticket is released, then its action (the
publish) runs, in ticket order, under the stream's lock, so two threads releasing at the
same moment cannot interleave their publishes. A window that produces nothing to publish
(a failed answer, a window the engine had no room for) releases its ticket with no action.

The engine answers every window exactly once, by its deadline at the latest. Should an
answer still not come (a bug, an engine stopping), `expire` gives up on the oldest ticket
after `max_wait_s`, so the windows behind it are not held forever; if that answer comes
later after all, it is published then (late, counted), never dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Action = Callable[[], None]


class ResultOrder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = 0  # the next ticket to hand out
        self._head = 0  # the oldest ticket not yet released or given up
        self._waiting: dict[int, float] = {}  # outstanding ticket -> when it was taken
        self._ready: dict[int, Action | None] = {}  # answered, behind an outstanding one
        self.late = 0  # answers that came after their ticket was given up

    def ticket(self, now: float) -> int:
        """A place in the order for the next window (`now`: time.monotonic())."""
        with self._lock:
            ticket = self._next
            self._next += 1
            self._waiting[ticket] = now
            return ticket

    @property
    def held(self) -> int:
        """Answers waiting for an earlier one."""
        with self._lock:
            return len(self._ready)

    def release(self, ticket: int, action: Action | None) -> None:
        """`ticket`'s answer: run `action` (None: nothing to publish) once every earlier
        ticket is released, with every later answer that was waiting for this one."""
        with self._lock:
            if ticket not in self._waiting:  # given up by `expire`: out of order, not lost
                self.late += 1
                if action is not None:
                    _run(action)
                return
            del self._waiting[ticket]
            self._ready[ticket] = action
            self._advance()

    def expire(self, now: float, max_wait_s: float) -> int:
        """Give up on the oldest tickets taken more than `max_wait_s` ago and run what was
        waiting behind them. Returns how many were given up."""
        given_up = 0
        with self._lock:
            while self._head < self._next and self._head not in self._ready:
                taken = self._waiting.get(self._head)
                if taken is not None and now - taken < max_wait_s:
                    break
                self._waiting.pop(self._head, None)
                self._head += 1
                given_up += 1
                self._advance()
        return given_up

    def _advance(self) -> None:
        """Run the actions now at the head, in ticket order (the lock is held)."""
        while self._head in self._ready:
            action = self._ready.pop(self._head)
            self._head += 1
            if action is not None:
                _run(action)


def _run(action: Action) -> None:
    try:
        action()
    except Exception:  # one failed publish must not hold back the results behind it
        log.exception("publishing a device result failed")
