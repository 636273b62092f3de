"""Logging setup for the daemon: journald-friendly under systemd, secrets redacted.

Under systemd the journal adds its own timestamp, unit and pid, so lines carry
only an sd-daemon(3) priority prefix (``<3>`` error ... ``<7>`` debug, which
journald turns into the entry's priority) and ``logger: message``. Elsewhere
lines get a timestamp. Every registered secret value (passwords, tokens read
from credentials) is replaced by ``***`` before anything is written.
"""

from __future__ import annotations

import io
import json as jsonlib
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from typing import TextIO

REDACTED = "***"

_LEVELS = {
    "CRITICAL": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
}

# sd-daemon(3) priorities, checked from the most severe down.
_PRIORITIES = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_DEBUG_PRIORITY = 7

_PLAIN_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
_JOURNAL_FORMAT = "%(name)s: %(message)s"


class _SecretRegistry:
    """The secret values to redact, as one compiled pattern (longest first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self.pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        with self._lock:
            self._values.add(value)
            # Longest first, so a secret containing another is redacted whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self.pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self.pattern = None


_secrets = _SecretRegistry()


def register_secret(value: str) -> None:
    """Redact ``value`` from every log line from now on (empty values are ignored)."""
    if value:
        _secrets.add(value)


def clear_secrets() -> None:
    """Forget all registered secrets (for tests)."""
    _secrets.clear()


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    pattern = _secrets.pattern
    if pattern is None:
        return text
    return pattern.sub(REDACTED, text)


def syslog_priority(levelno: int) -> int:
    """Map a logging level to its sd-daemon priority (2 crit ... 7 debug)."""
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return _DEBUG_PRIORITY


class SecretRedactingFilter(logging.Filter):
    """Redacts registered secrets from a record's message, its args and traceback text.

    The message is merged with its args first (so a secret inside an arg's
    ``repr`` is caught too) and the args are dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets.pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # malformed args: leave it to logging's own error report
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class LogFormatter(logging.Formatter):
    """Plain or JSON lines; with ``journal`` every line gets a ``<N>`` priority prefix.

    The whole output, traceback included, is passed through ``redact`` last.
    """

    def __init__(self, *, journal: bool, json: bool = False) -> None:
        super().__init__(_JOURNAL_FORMAT if journal else _PLAIN_FORMAT)
        self.journal = journal
        self.json = json

    def format(self, record: logging.LogRecord) -> str:
        text = self._format_json(record) if self.json else super().format(record)
        text = redact(text)
        if not self.journal:
            return text
        # journald parses the prefix per line: a traceback would otherwise
        # land at the default priority (info), one entry per line.
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.splitlines() or [""])

    def _format_json(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return jsonlib.dumps(entry, ensure_ascii=False, default=str)


def under_systemd(environ: Mapping[str, str], stream: TextIO) -> bool:
    """True when ``stream`` goes to the journal (or we are a systemd service).

    ``JOURNAL_STREAM`` is ``dev:inode`` of the journal stream; when the
    stream's fd can be checked and differs (output redirected), it is not
    the journal. Without it, ``INVOCATION_ID`` (set for every unit) decides.
    """
    journal_stream = environ.get("JOURNAL_STREAM", "")
    if journal_stream:
        try:
            dev, ino = (int(part) for part in journal_stream.split(":"))
            st = os.fstat(stream.fileno())
        except (ValueError, OSError, io.UnsupportedOperation):
            return True  # set by systemd but not verifiable (e.g. a wrapped stream)
        return (st.st_dev, st.st_ino) == (dev, ino)
    return bool(environ.get("INVOCATION_ID"))


def setup_logging(
    level: str,
    json: bool = False,
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Configure the root logger once for the daemon; calling again replaces our handler.

    ``level`` is a level name (case-insensitive). ``stream`` defaults to stderr
    and ``environ`` to ``os.environ`` (both for tests). Returns the handler.
    """
    try:
        levelno = _LEVELS[level.upper()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}, expected one of {sorted(_LEVELS)}"
        ) from None
    out = sys.stderr if stream is None else stream
    env = os.environ if environ is None else environ

    handler = logging.StreamHandler(out)
    handler.set_name("edge-agent")
    handler.setFormatter(LogFormatter(journal=under_systemd(env, out), json=json))
    handler.addFilter(SecretRedactingFilter())

    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "edge-agent":
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    logging.captureWarnings(True)
    return handler
