#!/usr/bin/env bash
# Installs everything the tests need and runs the whole test suite (arguments go to pytest, e.g.
# `bash scripts/test.sh tests/test_cli.py -q`). Works on a fresh Linux machine with only Python >= 3.10.
#
# * ./.venv: torch==2.13.0 as pip resolves it (a local CPU wheel on the project's machines; the CUDA build from
#   PyPI elsewhere unless TORCH_INDEX_URL names the CPU index) and this package with its test extra; runs every
#   test not marked `comfyui`.
# * Each ComfyUI checkout found gets its own venv (scripts/comfy_env.sh: the torch trio ComfyUI runs with, that
#   ComfyUI's requirements, Playwright), and the tests marked `comfyui` run once per checkout (the nodes
#   in-process, a real server over HTTP, the frontend in a headless browser): by default the oldest supported and
#   the newest one beside the repository, as in CI -- ../shared/comfyui/ComfyUI (0.3.64, in ./.venv-comfy) and
#   ../shared/comfyui/ComfyUI-0.33.0 (in ./.venv-comfy-0.33); with $COMFYUI_PATH only that checkout (in
#   $COMFYUI_VENV, default ./.venv-comfy). Chromium for the browser test is Debian's `chromium`, installed with
#   apt-get when missing and running as root. Without any checkout those tests are skipped with a message saying
#   how to enable them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# "checkout:venv" pairs, one per ComfyUI the comfyui-marked tests run against.
if [ -n "${COMFYUI_PATH:-}" ]; then
    COMFY_RUNS=("$COMFYUI_PATH:${COMFYUI_VENV:-.venv-comfy}")
else
    COMFY_RUNS=("../shared/comfyui/ComfyUI:.venv-comfy" "../shared/comfyui/ComfyUI-0.33.0:.venv-comfy-0.33")
fi
present_runs=()
for run in "${COMFY_RUNS[@]}"; do
    if [ -f "${run%:*}/main.py" ]; then present_runs+=("$run"); fi
done

# The environments take room: ./.venv about 3 GB, each ComfyUI venv (torch's CUDA build) about 10 GB, Chromium
# 0.5 GB. Say so up front rather than fail half-way through an install with "No space left on device".
need_gb=4
for run in ${present_runs[@]+"${present_runs[@]}"}; do
    if [ ! -f "${run#*:}/.vexpress-stamp" ]; then need_gb=$((need_gb + 11)); fi
done
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

if [ ${#present_runs[@]} = 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi

seconds() { date +%s; }
for run in "${present_runs[@]}"; do
    started=$(seconds)
    bash scripts/comfy_env.sh "${run%:*}" "${run#*:}"
    echo "ComfyUI test environment ${run#*:} ready after $(( $(seconds) - started )) s" >&2
done
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser test" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# pytest's exit code 5 (nothing selected, e.g. arguments naming only tests of the other kind) counts as success as
# long as some run selected something.
codes=()
# The first checkout is named to this run too, so that the ComfyUI test modules are collected and deselected by
# their marker rather than skipped as "no ComfyUI to test against".
first=${present_runs[0]}
COMFYUI_PATH=$(realpath "${first%:*}") COMFYUI_PYTHON=$PWD/${first#*:}/bin/python \
    .venv/bin/python -m pytest -m "not comfyui" "$@" || codes+=($?)
[ ${#codes[@]} -gt 0 ] || codes+=(0)
for run in "${present_runs[@]}"; do
    started=$(seconds)
    COMFYUI_PATH=$(realpath "${run%:*}")
    COMFYUI_PYTHON=$PWD/${run#*:}/bin/python
    export COMFYUI_PATH COMFYUI_PYTHON
    echo "=== comfyui tests against $COMFYUI_PATH (${run#*:})" >&2
    # ComfyUI's checkout is only read (CI runs as root, so nothing else would stop a bytecode cache being written).
    code=0
    # Each ComfyUI's browser screenshots in their own folder (test-artifacts/<checkout>/browser/).
    VEXPRESS_ARTIFACTS="${VEXPRESS_ARTIFACTS:-$PWD/test-artifacts}/$(basename "$COMFYUI_PATH")" \
        PYTHONDONTWRITEBYTECODE=1 "$COMFYUI_PYTHON" -m pytest -m comfyui "$@" || code=$?
    codes+=("$code")
    echo "=== comfyui tests against $COMFYUI_PATH: exit $code after $(( $(seconds) - started )) s" >&2
done
ran=no
for code in "${codes[@]}"; do
    if [ "$code" != 5 ]; then ran=yes; fi
done
for code in "${codes[@]}"; do
    if [ "$code" != 0 ] && { [ "$code" != 5 ] || [ "$ran" = no ]; }; then exit "$code"; fi
done
