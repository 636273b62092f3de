#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy --strict), tests (pytest).
# Creates .venv on first use and installs the project with its dev extras.
# Extra arguments go to pytest, e.g. scripts/test.sh -k mqtt -x
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "== ruff"
.venv/bin/ruff check agent tests models
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
