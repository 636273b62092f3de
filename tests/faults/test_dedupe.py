"""The de-duplication window: copies in flight and answered, bounds, persistence."""

from __future__ import annotations

import time
from pathlib import Path

from agent.dedupe import Dedupe
from agent.outbox import Outbox, OutMessage


def _answer(i: int) -> OutMessage:
    return OutMessage("r/digits", f'{{"id": "{i}"}}'.encode(), 1)


def test_new_inflight_answered() -> None:
    d: Dedupe[str] = Dedupe()
    assert d.begin("digits/a", "m1") == "new"
    assert d.begin("digits/a", "m2") == "inflight"
    assert d.begin("digits/a", "m3") == "inflight"
    assert d.complete("digits/a", _answer(1)) == ["m2", "m3"]
    assert d.begin("digits/a", "m4") == "answered"
    assert d.answer_of("digits/a") == _answer(1)
    assert d.begin("other/a", "m5") == "new", "keys are per task"
    assert d.stats()["copies_inflight"] == 2 and d.stats()["copies_answered"] == 1


def test_abandon_lets_a_copy_through() -> None:
    d: Dedupe[str] = Dedupe()
    assert d.begin("k", "m1") == "new"
    assert d.begin("k", "m2") == "inflight"
    assert d.abandon("k") == ["m2"]
    assert d.begin("k", "m3") == "new"


def test_window_is_bounded_by_count_and_age() -> None:
    now = [0.0]
    d: Dedupe[str] = Dedupe(max_entries=100, window_s=60, clock=lambda: now[0])
    for i in range(250):
        d.begin(str(i), "m")
        d.complete(str(i), None)
    assert d.stats()["window"] == 100
    assert d.begin("0", "m") == "new", "evicted by count"
    d.complete("0", None)
    assert d.begin("249", "m") == "answered"
    now[0] = 61.0
    assert d.begin("249", "m") == "new", "evicted by age"


def test_window_survives_a_restart_through_the_outbox_database(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "state.sqlite3").start()
    d: Dedupe[str] = Dedupe(box, max_entries=1000)
    for i in range(50):
        assert d.begin(f"digits/{i}", "m") == "new"
        d.complete(f"digits/{i}", _answer(i))
    time.sleep(0.2)
    box.close()
    box2 = Outbox(tmp_path / "state.sqlite3").start()
    d2: Dedupe[str] = Dedupe(box2, max_entries=1000)
    assert d2.begin("digits/7", "m") == "answered"
    assert d2.answer_of("digits/7") == _answer(7)
    assert d2.begin("digits/77", "m") == "new"
    box2.close()


def test_persistent_window_is_pruned(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "state.sqlite3").start()
    d: Dedupe[str] = Dedupe(box, max_entries=100)
    for i in range(2000):
        d.begin(str(i), "m")
        d.complete(str(i), _answer(i))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        (count,) = box._db.execute("SELECT COUNT(*) FROM answered").fetchone()
        if count <= 100 + 1000:  # pruned every 1000 completions
            break
        time.sleep(0.05)
    assert count <= 1100
    box.close()
