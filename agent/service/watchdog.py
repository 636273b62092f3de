"""Pets the systemd watchdog only while the daemon reports itself healthy.

A thread that just pets on a timer proves only that the interpreter is alive.
Here every pet is gated on a health check (MQTT loop alive, inference workers
not stuck, ...): when it fails, or hangs, the pets stop and systemd restarts
the service after ``WatchdogSec=``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agent.service.notify import Notifier

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], tuple[bool, str]]
"""Returns ``(healthy, reason)``; the reason is logged when healthy is False."""


class WatchdogLoop:
    """Every ``interval`` seconds, runs ``health_check`` and pets if it passes.

    ``interval`` defaults to the notifier's (half of ``WatchdogSec=``); with no
    watchdog configured, ``start()`` does nothing.
    """

    def __init__(
        self,
        notifier: Notifier,
        health_check: HealthCheck,
        interval: float | None = None,
    ) -> None:
        self._notifier = notifier
        self._health_check = health_check
        self._interval = interval if interval is not None else notifier.watchdog_interval()
        if self._interval is not None and self._interval <= 0:
            raise ValueError(f"watchdog interval must be positive, got {self._interval}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unhealthy_reason: str | None = None

    @property
    def interval(self) -> float | None:
        """Seconds between checks, or None when there is no watchdog to pet."""
        return self._interval

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the petting thread (no-op without a watchdog or if running)."""
        if self._interval is None:
            logger.debug("no systemd watchdog configured, not starting watchdog loop")
            return
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(self._interval,), name="systemd-watchdog", daemon=True
        )
        self._thread.start()
        logger.info("watchdog loop started, checking health every %.1f s", self._interval)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("watchdog thread did not stop within %.1f s", timeout)

    def check_once(self) -> bool:
        """Run the health check and pet if it passes; returns whether it petted."""
        try:
            healthy, reason = self._health_check()
        except Exception as exc:  # a crashing check means unhealthy, not a dead loop
            healthy, reason = False, f"health check raised {exc!r}"
        if healthy:
            if self._unhealthy_reason is not None:
                logger.info("health check passes again, resuming watchdog pets")
                self._unhealthy_reason = None
            self._notifier.watchdog()
            return True
        if reason != self._unhealthy_reason:
            logger.warning("health check failed, not petting the watchdog: %s", reason)
            self._unhealthy_reason = reason
        return False

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.check_once()
            self._stop.wait(interval)
