"""Log lines for the journal and for a terminal, with secrets redacted."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service.logsetup import (
    SecretRedactingFilter,
    clear_secrets,
    register_secret,
    setup_logging,
    syslog_priority,
    under_systemd,
)

TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    clear_secrets()
    logging.captureWarnings(False)


def capture(
    level: str = "DEBUG", *, json: bool = False, env: dict[str, str] | None = None
) -> io.StringIO:
    out = io.StringIO()
    setup_logging(level, json, stream=out, environ=env or {})
    return out


def test_plain_lines_have_a_timestamp() -> None:
    out = capture()
    logging.getLogger("agent.mqtt").info("connected to %s:%d", "broker", 8883)
    line = TIMESTAMP + r" INFO     agent\.mqtt: connected to broker:8883\n"
    assert re.fullmatch(line, out.getvalue())


@pytest.mark.parametrize("env", [{"INVOCATION_ID": "abc"}, {"JOURNAL_STREAM": "8:1234"}])
def test_journal_lines_have_priority_and_no_timestamp(env: dict[str, str]) -> None:
    out = capture(env=env)
    log = logging.getLogger("agent.app")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert out.getvalue().splitlines() == [
        "<7>agent.app: d",
        "<6>agent.app: i",
        "<4>agent.app: w",
        "<3>agent.app: e",
        "<2>agent.app: c",
    ]


def test_every_traceback_line_keeps_the_priority() -> None:
    out = capture(env={"INVOCATION_ID": "abc"})
    try:
        raise ValueError("bad frame")
    except ValueError:
        logging.getLogger("agent.worker").exception("inference failed")
    lines = out.getvalue().splitlines()
    assert lines[0] == "<3>agent.worker: inference failed"
    assert lines[-1] == "<3>ValueError: bad frame"
    assert all(line.startswith("<3>") for line in lines)


def test_level_threshold_and_bad_level() -> None:
    out = capture("warning")
    logging.getLogger("x").info("hidden")
    logging.getLogger("x").warning("shown")
    assert "hidden" not in out.getvalue()
    assert "shown" in out.getvalue()
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("LOUD")


def test_setup_twice_keeps_one_handler() -> None:
    capture()
    out = capture()
    logging.getLogger("x").info("once")
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "edge-agent"]
    assert len(ours) == 1
    assert out.getvalue().count("once") == 1


def test_priorities() -> None:
    assert [syslog_priority(n) for n in (5, 10, 20, 25, 30, 40, 50, 60)] == [7, 7, 6, 6, 4, 3, 2, 2]


def test_journal_stream_is_checked_against_the_real_fd(tmp_path: Path) -> None:
    with (tmp_path / "log").open("w") as stream:
        st = os.fstat(stream.fileno())
        assert under_systemd({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
        # Set by systemd for our parent, but our stderr was redirected: not the journal.
        assert not under_systemd({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, stream)
    assert not under_systemd({}, io.StringIO())
    assert under_systemd({"INVOCATION_ID": "x"}, io.StringIO())


def test_secrets_are_redacted_from_message_args_and_traceback() -> None:
    out = capture(env={"INVOCATION_ID": "abc"})
    register_secret("hunter2")
    register_secret("tok-ABC")
    register_secret("tok-ABC-longer")  # overlapping: redacted whole
    register_secret("")  # ignored, would otherwise match everywhere
    log = logging.getLogger("agent.cloud")
    log.info("password is hunter2")
    log.info("auth %s for %r", "Bearer tok-ABC-longer", {"token": "tok-ABC"})
    try:
        raise PermissionError("login hunter2 refused")
    except PermissionError:
        log.exception("cloud login failed")
    text = out.getvalue()
    assert "hunter2" not in text
    assert "tok-ABC" not in text
    assert "<6>agent.cloud: password is ***" in text
    assert "<6>agent.cloud: auth Bearer *** for {'token': '***'}" in text
    assert "<3>PermissionError: login *** refused" in text


def test_filter_rewrites_the_record_for_every_handler() -> None:
    register_secret("s3cret")
    record = logging.LogRecord("n", logging.INFO, __file__, 1, "pw=%s", ("s3cret",), None)
    assert SecretRedactingFilter().filter(record)
    assert record.msg == "pw=***"
    assert record.args is None


def test_json_lines() -> None:
    out = capture(json=True)
    register_secret("hunter2")
    logging.getLogger("agent.mqtt").warning("reconnecting with %s", "hunter2")
    entry = json.loads(out.getvalue())
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "agent.mqtt"
    assert entry["message"] == "reconnecting with ***"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", entry["ts"])


def test_json_under_systemd_keeps_the_prefix() -> None:
    out = capture(json=True, env={"INVOCATION_ID": "abc"})
    logging.getLogger("a").error("x")
    line = out.getvalue()
    assert line.startswith("<3>{")
    assert json.loads(line[3:])["message"] == "x"


def test_warnings_are_logged() -> None:
    import warnings

    out = capture(env={"INVOCATION_ID": "abc"})
    warnings.warn("old api", UserWarning, stacklevel=1)
    assert "<4>py.warnings: " in out.getvalue()
