#!/usr/bin/env bash
# Checks that `pip install -r requirements.txt` needs no compiler: resolves it with wheels only (--only-binary) for
# Linux x86_64 and aarch64, Windows x86_64 and macOS arm64 and x86_64, Python 3.10-3.13, without installing
# anything (--dry-run; pip fetches the wheels' metadata only). Prints one line per platform and Python, exits 1 if
# any of them needs a source build. Needs network access to the package index.
# pip evaluates environment markers for the Python running it, not for --python-version/--platform, so the
# requirements' own markers (mediapipe's) are evaluated here for each target first; markers deeper in the
# dependency tree are still pip's (the running Python's).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# name (sys_platform-platform_machine as markers see them): wheel platform tags
platforms=(
    "linux-x86_64:manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64"
    "linux-aarch64:manylinux_2_28_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64"
    "win32-AMD64:win_amd64"
    "darwin-arm64:macosx_14_0_arm64"
    "darwin-x86_64:macosx_13_0_x86_64"
)
# requirements.txt with each requirement's marker evaluated for one platform and Python version.
for_target() {
    "$PYTHON" - "$1" "$2" <<'PY'
import sys
from pip._vendor.packaging.requirements import Requirement

platform, version = sys.argv[1], sys.argv[2]
system, machine = platform.split("-")
env = {"python_version": version, "python_full_version": version + ".0", "sys_platform": system,
       "platform_machine": machine, "platform_system": {"linux": "Linux", "win32": "Windows", "darwin": "Darwin"}[system],
       "os_name": "nt" if system == "win32" else "posix"}
for line in open("requirements.txt"):
    line = line.split("#")[0].strip()
    if line and (Requirement(line).marker is None or Requirement(line).marker.evaluate(env)):
        print(line.split(";")[0])
PY
}
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
failed=0
for entry in "${platforms[@]}"; do
    args=()
    for tag in ${entry#*:}; do args+=(--platform "$tag"); done
    for version in 3.10 3.11 3.12 3.13; do
        for_target "${entry%%:*}" "$version" > "$target/requirements.txt"
        if out=$("$PYTHON" -m pip install --dry-run --ignore-installed --only-binary=:all: "${args[@]}" \
                 --python-version "$version" --target "$target/site" --no-cache-dir --quiet --disable-pip-version-check \
                 -r "$target/requirements.txt" 2>&1); then
            echo "ok      ${entry%%:*} Python $version: $(grep -c . "$target/requirements.txt") requirements"
        else
            echo "FAILED  ${entry%%:*} Python $version: $(grep ERROR <<<"$out" | grep -v Ignored | head -1)"
            failed=1
        fi
    done
done
exit "$failed"
