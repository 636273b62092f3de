"""The systemd notify protocol (sd_notify(3)), implemented directly.

systemd passes an AF_UNIX datagram socket in ``NOTIFY_SOCKET`` (a path, or an
abstract-namespace name written with a leading ``@``) and, when ``WatchdogSec=``
is set, the watchdog period in ``WATCHDOG_USEC`` (plus ``WATCHDOG_PID``, the pid
the period is meant for). Each message is one datagram of ``KEY=value`` lines.

Outside systemd (no socket) every method is a no-op. Sending never raises: a
lost notification must not take the daemon down (systemd notices anyway, by a
start timeout or a missed watchdog), so send errors are only logged at debug.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

logger = logging.getLogger(__name__)

# How long one send may block when systemd is slow to read its socket.
_SEND_TIMEOUT_S = 1.0


def _parse_address(value: str) -> str | None:
    """Return the socket address for ``NOTIFY_SOCKET``, or None if unusable."""
    if not value:
        return None
    if value.startswith("@"):
        # Abstract namespace: Python takes a str starting with NUL.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # e.g. "vsock:..." (systemd >= 253 inside VMs): not needed on a Pi.
    logger.debug("unsupported NOTIFY_SOCKET address %r, notifications disabled", value)
    return None


def _parse_watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """Return WATCHDOG_USEC if it is set, positive and meant for ``pid``."""
    raw_usec = environ.get("WATCHDOG_USEC", "")
    if not raw_usec:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        logger.debug("ignoring malformed WATCHDOG_USEC=%r", raw_usec)
        return None
    if usec <= 0:
        return None
    raw_pid = environ.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            target = int(raw_pid)
        except ValueError:
            logger.debug("ignoring malformed WATCHDOG_PID=%r", raw_pid)
            return None
        if target != pid:
            # The watchdog belongs to another process (e.g. our parent).
            return None
    return usec


def _one_line(text: str) -> str:
    """Values cannot span lines: a newline would start a new assignment."""
    return " ".join(text.splitlines())


class Notifier:
    """Sends service state to systemd; a no-op when not started by systemd.

    Thread-safe: the watchdog thread and the main thread may both send.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _parse_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = (
            _parse_watchdog_usec(env, os.getpid()) if self._address is not None else None
        )
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when a notify socket was given (i.e. we run under systemd)."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between pets (half of WatchdogSec=), or None if no watchdog."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1e6

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) finished: ``READY=1``."""
        return self.notify("READY=1", status=status)

    def status(self, text: str) -> bool:
        """Free-form status shown by ``systemctl status``."""
        return self.notify(status=text)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown began: ``STOPPING=1``."""
        return self.notify("STOPPING=1", status=status)

    def reloading(self, status: str | None = None) -> bool:
        """Reload began: ``RELOADING=1`` with ``MONOTONIC_USEC``; call ready() after.

        systemd >= 253 (Type=notify-reload) needs MONOTONIC_USEC to match this
        RELOADING=1 with the SIGHUP it sent; older versions ignore the field.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", status=status)

    def watchdog(self) -> bool:
        """Pet the watchdog: ``WATCHDOG=1``. No-op when no watchdog is configured."""
        if self._watchdog_usec is None:
            return False
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time: ``EXTEND_TIMEOUT_USEC`` (e.g. slow model load)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1e6))}")

    def notify(self, *assignments: str, status: str | None = None) -> bool:
        """Send raw ``KEY=value`` assignments (plus STATUS=) as one datagram.

        Returns True if the datagram was sent; never raises.
        """
        if self._address is None:
            return False
        lines = list(assignments)
        if status is not None:
            lines.append("STATUS=" + _one_line(status))
        if not lines:
            return False
        payload = "\n".join(lines).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    sock.settimeout(_SEND_TIMEOUT_S)
                    self._sock = sock
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                logger.debug("sd_notify %r failed: %s", payload, exc)
                self._close_locked()
                return False
        return True

    def close(self) -> None:
        """Release the socket; a later send opens a new one."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
