#!/usr/bin/env bash
# Installs everything the tests need into ./.venv (torch==2.13.0 as pip resolves it: a local CPU wheel on the
# project's machines, the CUDA build from PyPI elsewhere unless TORCH_INDEX_URL names the CPU index; the package
# with its test extra) and runs the whole test suite. Works on a fresh Linux machine with only Python >= 3.10.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
exec .venv/bin/python -m pytest "$@"
