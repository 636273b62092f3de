"""The unit's seccomp sandbox does not break the inference stack.

systemd is not PID 1 on a CI machine, so the unit cannot be started. Instead
this rebuilds the unit's syscall filters with libseccomp (Debian's
python3-seccomp) - the SystemCallFilter= allow list, minus its ~ deny lists,
with SystemCallErrorNumber=, plus the MemoryDenyWriteExecute=yes rules as
systemd's seccomp_memory_deny_write_execute() installs them - loads them into
a subprocess and runs the same libraries the agent uses: numpy (OpenBLAS
threads), a ctypes callback (libffi closure), OpenCV, TLS, sockets and a
quantized TFLite model with the XNNPACK delegate on 4 threads.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "edge-agent.service"
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
MODEL_CANDIDATES = [  # the agent's own int8 model; a shared one if the repo has none
    REPO / "models" / "digits" / "digits_edge_int8.tflite",
    REPO.parent / "shared" / "models" / "pretrained" / "mobilenet_v1_0.25_128_quant.tflite",
]


def _has_seccomp_binding() -> bool:
    probe = f"import sys; sys.path.append({DEBIAN_DIST_PACKAGES!r}); import seccomp"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False)
    return proc.returncode == 0


pytestmark = [
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing"),
    pytest.mark.skipif(
        not _has_seccomp_binding(),
        reason="libseccomp binding missing: apt-get install python3-seccomp",
    ),
]


@functools.cache
def expand(group: str) -> frozenset[str]:
    """The syscalls of a systemd @group (nested groups expanded), or a single name."""
    if not group.startswith("@"):
        return frozenset({group})
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            names |= expand(entry)
    return frozenset(names)


def unit_seccomp() -> dict[str, object]:
    """The unit's seccomp settings as the workload script expects them."""
    allowed: set[str] | None = None
    errno_name = "EPERM"
    mdwe = False
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        key, _, value = line.partition("=")
        if key == "SystemCallFilter":
            if value.startswith("~"):
                assert allowed is not None, "a deny list before any allow list"
                for group in value[1:].split():
                    allowed -= expand(group)
            else:
                allowed = set().union(*(expand(g) for g in value.split()))
        elif key == "SystemCallErrorNumber":
            errno_name = value
        elif key == "MemoryDenyWriteExecute":
            mdwe = value == "yes"
    assert allowed, "the unit has no SystemCallFilter= allow list"
    return {"allowed": sorted(allowed), "errno": errno_name, "mdwe": mdwe}


WORKLOAD = r"""
import errno, json, mmap, sys
sys.path.append(DIST)
import seccomp
sys.path.remove(DIST)
cfg = json.loads(sys.argv[1])
model = sys.argv[2]
deny = seccomp.ERRNO(getattr(errno, cfg["errno"]))

if cfg["mdwe"]:  # systemd's seccomp_memory_deny_write_execute()
    W, X, SHM_EXEC = 0x2, 0x4, 0o100000
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    f.add_rule(deny, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, W | X, W | X))
    f.add_rule(deny, "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, X, X))
    f.add_rule(deny, "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, X, X))
    f.add_rule(deny, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
    f.load()
f = seccomp.SyscallFilter(defaction=deny)  # loaded last: it denies seccomp() itself
for name in cfg["allowed"]:
    try:
        f.add_rule(seccomp.ALLOW, name)
    except (RuntimeError, ValueError):  # unknown on this architecture
        pass
f.load()

if cfg["mdwe"]:
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("W+X mapping was allowed: the filter is not in force")
    except OSError:
        pass

import ctypes
assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(41) == 42
import numpy as np
a = np.random.default_rng(0).random((600, 600))
assert np.isfinite(a @ a).all()
import cv2
assert cv2.resize(np.zeros((480, 640, 3), np.uint8), (128, 128)).shape == (128, 128, 3)
import socket, ssl, threading
ssl.create_default_context()
srv = socket.create_server(("127.0.0.1", 0))
socket.create_connection(srv.getsockname()).close()
import paho.mqtt.client, pydantic, yaml
if model:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=model, num_threads=4)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    for _ in range(3):
        it.invoke()
    out = it.get_output_details()[0]
    assert it.get_tensor(out["index"]).size > 0
print("WORKLOAD OK")
"""


def test_inference_stack_runs_under_the_units_seccomp_filter(tmp_path: Path) -> None:
    model = next((str(p) for p in MODEL_CANDIDATES if p.is_file()), "")
    script = tmp_path / "workload.py"
    script.write_text(f"DIST = {DEBIAN_DIST_PACKAGES!r}\n" + WORKLOAD)
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(unit_seccomp()), model],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WORKLOAD OK" in proc.stdout
    if model:
        assert "XNNPACK" in proc.stderr  # the delegate was created, not silently skipped
