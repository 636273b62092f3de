"""Running as a system service: systemd notify/watchdog protocol and logging setup."""

from agent.service.notify import Notifier
from agent.service.watchdog import WatchdogLoop

__all__ = ["Notifier", "WatchdogLoop"]
