#!/usr/bin/env bash
# Installs everything the tests need into ./.venv (CPU torch from the local wheel, the package with its
# test extra) and runs the whole test suite. Works on a fresh Linux machine with only Python >= 3.10.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest "$@"
