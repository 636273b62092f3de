"""deploy/install.sh into a temporary root: the tree, idempotence, uninstall.

The package installed is a tiny fake with an `edge-agent` console script, so
pip needs no network (PIP_NO_INDEX=1): it is built by an in-tree PEP 517
backend that uses only the standard library. The unit file is the real one.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"


def _can_make_venvs() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import ensurepip, venv"], check=False)
    return probe.returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not _can_make_venvs(),
        reason="this Python cannot create venvs: apt-get install python3-venv",
    ),
]

FAKE_PYPROJECT = """\
[build-system]
requires = []
build-backend = "fake_backend"
backend-path = ["."]

[project]
name = "edge-agent"
version = "0.0.1"
"""

# A PEP 517 backend in 25 lines: builds the wheel with the standard library
# only, so neither the network nor setuptools/wheel versions matter.
FAKE_BACKEND = """\
import base64, hashlib, zipfile

INFO = "edge_agent-0.0.1.dist-info"
FILES = {
    "fake_edge_agent.py": "def main():\\n    print('fake edge-agent')\\n",
    INFO + "/METADATA": "Metadata-Version: 2.1\\nName: edge-agent\\nVersion: 0.0.1\\n",
    INFO + "/WHEEL": "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    INFO + "/entry_points.txt": "[console_scripts]\\nedge-agent = fake_edge_agent:main\\n",
}


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\\n"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "edge_agent-0.0.1-py3-none-any.whl"
    record = INFO + "/RECORD"
    with zipfile.ZipFile(f"{wheel_directory}/{name}", "w") as whl:
        lines = ""
        for path, text in FILES.items():
            whl.writestr(path, text)
            lines += _record_line(path, text.encode())
        whl.writestr(record, lines + f"{record},,\\n")
    return name
"""


def make_source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "deploy").mkdir(parents=True)
    (src / "pyproject.toml").write_text(FAKE_PYPROJECT)
    (src / "fake_backend.py").write_text(FAKE_BACKEND)
    shutil.copy(REPO / "deploy" / "agent.yaml", src / "deploy")
    shutil.copy(REPO / "deploy" / "edge-agent.service", src / "deploy")
    (src / "models" / "training" / "__pycache__").mkdir(parents=True)
    (src / "models" / "manifest.json").write_text("{}\n")
    (src / "models" / "digits.tflite").write_bytes(b"TFL3")
    (src / "models" / "train.py").write_text("# training code\n")
    (src / "models" / "training" / "data.py").write_text("# training code\n")
    (src / "models" / "training" / "__pycache__" / "data.cpython-311.pyc").write_bytes(b"")
    shutil.copytree(REPO / "devices" / "profiles", src / "devices" / "profiles")
    return src


def run_install(root: Path, src: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PIP_NO_INDEX="1")
    env.pop("VIRTUAL_ENV", None)
    command = ["bash", str(INSTALL), "--root", str(root), "--source", str(src)]
    proc = subprocess.run(
        [*command, "--python", sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_twice_then_uninstall(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    root = tmp_path / "root"

    first = run_install(root, src, "--no-enable")
    opt, etc = root / "opt" / "edge-agent", root / "etc" / "edge-agent"
    entry = opt / "venv" / "bin" / "edge-agent"
    ran = subprocess.run([str(entry)], capture_output=True, text=True, check=True)
    assert ran.stdout == "fake edge-agent\n"
    # The shipped config, with models.dir pointing at the installed models and nothing else
    # changed (comments included).
    shipped = (REPO / "deploy" / "agent.yaml").read_text().splitlines()
    installed = (etc / "agent.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(shipped, installed, strict=True) if a != b]
    assert [b.strip() for _, b in changed] == ["dir: /opt/edge-agent/models"]
    assert yaml.safe_load("\n".join(installed))["models"]["dir"] == "/opt/edge-agent/models"
    assert mode(etc) == 0o755 and mode(etc / "agent.yaml") == 0o644
    assert mode(etc / "credentials") == 0o700
    for name in ("mqtt_password", "mqtt_client_key", "cloud_token"):
        assert mode(etc / "credentials" / name) == 0o600
        assert (etc / "credentials" / name).read_bytes() == b""
    unit = root / "etc" / "systemd" / "system" / "edge-agent.service"
    assert unit.read_text() == (REPO / "deploy" / "edge-agent.service").read_text()
    # Runtime artifacts only; the training code stays in the repo.
    models = sorted(str(p.relative_to(opt / "models")) for p in (opt / "models").rglob("*"))
    assert models == ["digits.tflite", "manifest.json"]
    profiles = sorted(p.name for p in (opt / "devices" / "profiles").glob("*.yaml"))
    assert profiles == sorted(p.name for p in (REPO / "devices" / "profiles").glob("*.yaml"))
    # Never touches the machine's systemd from a staging root.
    assert "would run: systemctl daemon-reload" in first.stdout
    assert "would run: systemctl enable" not in first.stdout

    # The user edits config and credentials; a second run keeps them.
    (etc / "agent.yaml").write_text("# mine\n")
    (etc / "credentials" / "mqtt_password").write_text("hunter2")
    (src / "models" / "digits.tflite").write_bytes(b"TFL3 v2")
    second = run_install(root, src)
    assert (etc / "agent.yaml").read_text() == "# mine\n"
    assert (etc / "agent.yaml.dist").is_file()
    assert (etc / "credentials" / "mqtt_password").read_text() == "hunter2"
    assert (opt / "models" / "digits.tflite").read_bytes() == b"TFL3 v2"
    assert not (opt / "models.new").exists()
    assert "keeping existing" in second.stdout
    assert "would run: systemctl enable edge-agent.service" in second.stdout
    assert entry.is_file()

    run_install(root, src, "--uninstall")
    assert not opt.exists()
    assert not unit.exists()
    assert (etc / "agent.yaml").read_text() == "# mine\n"

    run_install(root, src, "--uninstall", "--purge")
    assert not etc.exists()


def test_bad_arguments_fail_clearly(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(INSTALL), "--root", str(tmp_path), "--source", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "no pyproject.toml" in proc.stderr
    proc = subprocess.run(
        ["bash", str(INSTALL), "--frobnicate"], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert "unknown option" in proc.stderr
