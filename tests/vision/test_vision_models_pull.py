"""`edge-agent models pull`: fetched from a local HTTP server serving the shared copy (no
internet here), checked against the catalog's sha256, a mismatch refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.models_pull import PullError, pull
from agent.registry import sha256_file
from agent.vision.catalog import BASE_URL, CATALOG, CORAL_COMMIT
from tests.vision.conftest import MOVENET


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve_dir() -> Iterator[object]:
    servers: list[ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(directory)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_catalog_points_at_the_pinned_coral_commit(pretrained: Path) -> None:
    assert len(CORAL_COMMIT) == 40
    for model in CATALOG.values():
        assert model.file.url == BASE_URL + model.file.file
        assert model.file.url.startswith("https://github.com/google-coral/test_data/raw/")
        for item in model.files:  # the shared copy is the published file
            assert sha256_file(pretrained / item.file) == item.sha256


def test_pull_fetches_and_checks_the_sha256(
    pretrained: Path, serve_dir: object, tmp_path: Path
) -> None:
    base = serve_dir(pretrained)  # type: ignore[operator]
    pulled = pull("mobilenet-v1-0.25", tmp_path / "models", base_url=base)
    names = [p.path.name for p in pulled]
    assert names == ["mobilenet_v1_0.25_128_quant.tflite", "imagenet_labels.txt"]
    assert all(p.url is not None and p.url.startswith(base) for p in pulled)
    for p in pulled:
        assert sha256_file(p.path) == sha256_file(pretrained / p.path.name)
    again = pull("mobilenet-v1-0.25", tmp_path / "models", base_url=base)
    assert [p.url for p in again] == [None, None]  # already there and valid: not fetched


def test_a_mismatching_file_is_refused_and_not_installed(
    pretrained: Path, serve_dir: object, tmp_path: Path
) -> None:
    evil = tmp_path / "evil"
    evil.mkdir()
    shutil.copy(pretrained / "mobilenet_v1_0.25_128_quant.tflite", evil / MOVENET)
    base = serve_dir(evil)  # type: ignore[operator]
    dest = tmp_path / "models"
    with pytest.raises(PullError, match="sha256 mismatch"):
        pull("movenet-lightning", dest, base_url=base)
    assert not (dest / MOVENET).exists()
    assert list(dest.iterdir()) == []  # no partial file left behind
    with pytest.raises(PullError, match="HTTP 404"):
        pull("movenet-lightning", dest, url=base + "nothing.tflite")
    with pytest.raises(PullError, match="unknown model"):
        pull("yolo", dest)


def test_cli_pull_then_the_agent_finds_the_model(
    pretrained: Path, serve_dir: object, tmp_path: Path
) -> None:
    base = serve_dir(pretrained)  # type: ignore[operator]
    dest = tmp_path / "models"
    run = partial(subprocess.run, capture_output=True, text=True, timeout=120)
    cli = [sys.executable, "-m", "agent", "models", "pull"]
    ok = run([*cli, "movenet-lightning", "--models", str(dest), "--url", base + MOVENET])
    assert ok.returncode == 0, ok.stderr
    assert "sha256 checked" in ok.stdout
    bad = run([*cli, "mobilenet-v2", "--models", str(dest), "--url", base + MOVENET])
    assert bad.returncode == 1 and "sha256 mismatch" in bad.stderr
    listed = run([*cli, "--list"])
    assert listed.returncode == 0 and "movenet-lightning" in listed.stdout

    from agent.vision.catalog import task_models

    models = task_models("pose", None, [dest])
    assert models.edge is not None and models.edge.path == dest / MOVENET
    models.edge.verify()
