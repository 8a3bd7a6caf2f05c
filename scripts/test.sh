#!/usr/bin/env bash
# Installs everything the tests need and runs the whole test suite (arguments go to pytest, e.g.
# `bash scripts/test.sh tests/test_cli.py -q`). Works on a fresh Linux machine with only Python >= 3.10.
#
# * ./.venv: torch==2.13.0 as pip resolves it (a local CPU wheel on the project's machines; the CUDA build from
#   PyPI elsewhere unless TORCH_INDEX_URL names the CPU index) and this package with its test extra; runs every
#   test not marked `comfyui`.
# * With a ComfyUI checkout (../shared/comfyui/ComfyUI beside the repository, as in CI, or $COMFYUI_PATH), also
#   ./.venv-comfy (scripts/comfy_env.sh: the torch trio ComfyUI runs with, its requirements, Playwright) and
#   Chromium for the browser test (Debian's `chromium`, installed with apt-get when missing and running as
#   root), then the tests marked `comfyui` run there: the nodes in-process, a real server over HTTP, and the
#   frontend in a headless browser. Without a checkout those tests are skipped with a message saying how to
#   enable them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
COMFY_DIR=${COMFYUI_PATH:-../shared/comfyui/ComfyUI}

# The environments take room: ./.venv about 3 GB, ./.venv-comfy (torch's CUDA build) about 10 GB, Chromium 0.5 GB.
# Say so up front rather than fail half-way through an install with "No space left on device".
need_gb=4
if [ -f "$COMFY_DIR/main.py" ] && [ ! -f .venv-comfy/.vexpress-stamp ]; then need_gb=$((need_gb + 11)); fi
free_gb=$(( $(df -Pk . | awk 'NR == 2 {print $4}') / 1048576 ))
if [ "$free_gb" -lt "$need_gb" ]; then
    echo "warning: $free_gb GB free on $(df -P . | awk 'NR == 2 {print $6}'); the test environments need about" \
         "$need_gb GB (free some space, e.g. old virtual environments or clones, if an install fails)" >&2
fi
export PIP_NO_CACHE_DIR=1  # wheels are installed once per venv; a cache would only double the space they take
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/python -m ruff check .

if [ ! -f "$COMFY_DIR/main.py" ]; then
    exec .venv/bin/python -m pytest "$@"
fi

seconds() { date +%s; }
started=$(seconds)
bash scripts/comfy_env.sh "$COMFY_DIR"
echo "ComfyUI test environment ready after $(( $(seconds) - started )) s" >&2
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser test" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
COMFYUI_PATH=$(realpath "$COMFY_DIR")
COMFYUI_PYTHON=$PWD/.venv-comfy/bin/python
export COMFYUI_PATH COMFYUI_PYTHON

# Two runs; pytest's exit code 5 (nothing selected, e.g. arguments naming only tests of the other kind) counts as
# success as long as one of the two ran something.
status=0
.venv/bin/python -m pytest -m "not comfyui" "$@" || status=$?
comfy_status=0
# ComfyUI's checkout is only read (CI runs as root, so nothing else would stop a bytecode cache being written there).
PYTHONDONTWRITEBYTECODE=1 .venv-comfy/bin/python -m pytest -m comfyui "$@" || comfy_status=$?
if [ "$status" = 5 ] && [ "$comfy_status" != 5 ]; then status=0; fi
if [ "$comfy_status" = 5 ] && [ "$status" != 5 ]; then comfy_status=0; fi
if [ "$status" != 0 ]; then exit "$status"; fi
exit "$comfy_status"
