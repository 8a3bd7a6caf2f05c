#!/usr/bin/env bash
# Checks that `pip install -r requirements.txt` needs no compiler: resolves it with wheels only (--only-binary) for
# Linux x86_64 and aarch64, Windows x86_64 and macOS arm64 and x86_64, Python 3.10-3.13, without installing
# anything (--dry-run; pip fetches the wheels' metadata only). Prints one line per platform and Python, exits 1 if
# any of them needs a source build. Needs network access to the package index.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
platforms=(
    "linux-x86_64:manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64"
    "linux-aarch64:manylinux_2_28_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64"
    "windows-x86_64:win_amd64"
    "macos-arm64:macosx_14_0_arm64"
    "macos-x86_64:macosx_13_0_x86_64"
)
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
failed=0
for entry in "${platforms[@]}"; do
    args=()
    for tag in ${entry#*:}; do args+=(--platform "$tag"); done
    for version in 3.10 3.11 3.12 3.13; do
        if out=$("$PYTHON" -m pip install --dry-run --ignore-installed --only-binary=:all: "${args[@]}" \
                 --python-version "$version" --target "$target" --no-cache-dir --quiet --disable-pip-version-check \
                 -r requirements.txt 2>&1); then
            echo "ok      ${entry%%:*} Python $version"
        else
            echo "FAILED  ${entry%%:*} Python $version: $(grep -m1 ERROR <<<"$out")"
            failed=1
        fi
    done
done
exit "$failed"
