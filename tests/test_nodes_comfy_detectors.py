"""The pack inside ComfyUI with no face detector installed (neither insightface nor MediaPipe, as on a Python that
has no MediaPipe wheel): it loads, every node's schema builds, and the nodes that detect faces say in one line
what to install. Runs in a child Python (ComfyUI imported in-process, like tests/comfy_harness.py does) where both
packages fail to import; skipped with a how-to without a ComfyUI checkout."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import comfy_harness

pytestmark = pytest.mark.comfyui

PROBE = """
import asyncio, importlib.util, json, sys
for name in ("insightface", "mediapipe", "onnxruntime"):
    sys.modules[name] = None  # `import name` now fails as if the package were not installed
comfy, repo = sys.argv[1], sys.argv[2]
sys.path.insert(0, comfy)
from comfy.cli_args import args
args.cpu = True
spec = importlib.util.spec_from_file_location("vx_probe", repo + "/__init__.py", submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec)
sys.modules["vx_probe"] = pack
spec.loader.exec_module(pack)

async def node_ids():
    extension = await pack.comfy_entrypoint()
    return [node.GET_SCHEMA().node_id for node in await extension.get_node_list()]

ids = asyncio.run(node_ids())
from vx_probe.nodes.kps import make_face_detector
try:
    make_face_detector("auto")
    message = None
except Exception as exc:
    message = f"{type(exc).__name__}: {exc}"
print(json.dumps({"nodes": ids, "message": message}))
"""


def test_pack_loads_without_any_face_detector_and_says_what_to_install() -> None:
    comfy = comfy_harness.comfyui_path()
    if comfy is None:
        pytest.skip(f"needs a ComfyUI checkout: {comfy_harness.HOW_TO}")
    result = subprocess.run([sys.executable, "-c", PROBE, str(comfy), str(comfy_harness.REPO_ROOT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(found["nodes"]) == 10 and "VExpressFaceCrop" in found["nodes"]
    message = found["message"]
    assert message.startswith("MissingPackageError: no face detector is installed") and "\n" not in message, message
    assert "pip install" in message and "mediapipe" in message and "insightface" in message
    assert "Traceback" not in result.stderr and "V-Express" not in result.stderr, result.stderr[-3000:]
