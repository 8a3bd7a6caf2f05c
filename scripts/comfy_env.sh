#!/usr/bin/env bash
# Builds (or checks) a virtual environment (./.venv-comfy unless named): a second virtual environment for the tests that run the pack inside a real
# ComfyUI (tests/test_nodes_comfy.py in-process, tests/test_comfyui_integration.py and tests/test_comfyui_browser.py
# against a server). ComfyUI imports torchvision at start-up, and the CPU torch 2.13.0 of ./.venv has no matching
# torchvision, so this venv holds the trio torch 2.14.1 / torchvision 0.29.1 / torchaudio 2.11.1 (CUDA builds,
# run with --cpu), ComfyUI's requirements.txt under a constraints file that keeps that trio, `requests` (the 0.3.64
# server imports it without listing it), Playwright's Python package, and this pack with its test extra.
# Idempotent: when the venv is complete (a stamp of its inputs matches) it returns in about a second.
# Usage: bash scripts/comfy_env.sh COMFYUI_DIR [VENV_DIR]   (one venv per ComfyUI: their requirements differ,
# e.g. .venv-comfy for ../shared/comfyui/ComfyUI and .venv-comfy-0.33 for ../shared/comfyui/ComfyUI-0.33.0)
set -euo pipefail
cd "$(dirname "$0")/.."
COMFY_DIR=${1:?usage: scripts/comfy_env.sh COMFYUI_DIR [VENV_DIR]}
VENV=${2:-.venv-comfy}
PYTHON=${PYTHON:-python3}
TRIO=(torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.1)
STAMP="$VENV/.vexpress-stamp"
want=$(cat "$COMFY_DIR/requirements.txt" requirements.txt pyproject.toml "$0" | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi
started=$(date +%s)
echo "building $VENV for the ComfyUI tests (torch 2.14.1 trio + ComfyUI's requirements; a few minutes once)" >&2
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install "${TRIO[@]}"
constraints="$VENV/constraints.txt"
printf '%s\n' "${TRIO[@]}" > "$constraints"
pip_install -c "$constraints" -r "$COMFY_DIR/requirements.txt" requests playwright
pip_install -c "$constraints" -e ".[test]"
echo "$want" > "$STAMP"
echo "$VENV ready in $(( $(date +%s) - started )) s" >&2
