"""What our persistent MQTT sessions hold on the broker, written down in the state directory.

With a persistent session (MQTT 5 session expiry > 0, or 3.1.1 without a clean session) the
broker keeps a client's subscriptions, and queues what matches them while the client is
away, until the session expires. The broker cannot be asked what a session holds, so each
client records its filters here, one small JSON file per client id. Two things use it when
the configuration changed between runs:

* the client unsubscribes, on its first connection, the filters its session still has but
  this run does not ask for (agent/mqtt/client.py);
* the agent drains the sessions of serving processes that no longer exist
  (`<client id>-p<K>` after lowering `workers.processes`; agent/mqtt/drain.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PREFIX = "mqtt-session-"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class StoredSession:
    client_id: str
    filters: list[str]
    path: Path


class SessionLedger:
    """The filters of one client id's session (`<state dir>/mqtt-session-<client id>.json`)."""

    def __init__(self, state_dir: Path, client_id: str) -> None:
        self.client_id = client_id
        self.path = state_dir / f"{_PREFIX}{_UNSAFE.sub('_', client_id)}.json"
        self._last: list[str] | None = None

    def filters(self) -> list[str]:
        stored = _read(self.path)
        return stored.filters if stored is not None and stored.client_id == self.client_id else []

    def record(self, filters: Iterable[str]) -> None:
        """Write the filters (atomically); a failure is logged, never raised: without the
        record the next run only skips this clean-up."""
        wanted = list(dict.fromkeys(filters))
        if wanted == self._last:
            return
        body = json.dumps({"client_id": self.client_id, "filters": wanted}, indent=1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(body + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot record the MQTT session's filters in %s: %s", self.path, exc)
            return
        self._last = wanted


def stored_sessions(state_dir: Path) -> list[StoredSession]:
    """Every session recorded in the state directory."""
    found = []
    for path in sorted(state_dir.glob(f"{_PREFIX}*.json")):
        stored = _read(path)
        if stored is not None:
            found.append(stored)
    return found


def _read(path: Path) -> StoredSession | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable MQTT session record %s: %s", path, exc)
        return None
    client_id = data.get("client_id") if isinstance(data, dict) else None
    filters = data.get("filters") if isinstance(data, dict) else None
    if (
        not isinstance(client_id, str)
        or not isinstance(filters, list)
        or not all(isinstance(f, str) for f in filters)
    ):
        log.warning("ignoring malformed MQTT session record %s", path)
        return None
    return StoredSession(client_id, filters, path)
