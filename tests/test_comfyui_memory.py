"""The pack's networks under ComfyUI's memory management in a real server, in each memory mode the server offers:
ComfyUI's default (dynamic VRAM through comfy-aimdo since 0.15 where the device supports it; a CPU server has it
off, since comfy-aimdo needs a GPU) and ``--disable-dynamic-vram`` (the legacy ModelPatcher path, where the
ComfyUI has that option). In each: the first prompt loads every network, a second reuses them (no load), ``/free``
(posted during the second) unloads them after it, and the prompt after that loads them again.

Same server set-up as tests/test_comfyui_integration.py (needs COMFYUI_PATH and COMFYUI_PYTHON, else skipped with
a how-to). The server logs at DEBUG level, where ComfyUI names each model it unloads ("Unloading <class>").
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests import comfy_server
from tests.test_comfyui_integration import FIX_FACE, HOW_TO, REPO, _small

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]
MODES = {"default": (), "disable-dynamic-vram": ("--disable-dynamic-vram",)}
LOADED = re.compile(r"Requested to load (VExpress_\w+)")
UNLOADED = re.compile(r"Unloading (VExpress_\w+)")


def _supports(args: tuple[str, ...]) -> bool:
    """Whether this ComfyUI's command line has these options (0.3.64 has no --disable-dynamic-vram)."""
    cli = Path(os.environ.get("COMFYUI_PATH", "")) / "comfy" / "cli_args.py"
    return cli.is_file() and all(arg in cli.read_text() for arg in args)


@pytest.fixture(scope="module", params=list(MODES))
def server(request, tmp_path_factory, tiny_model_dir):
    args = MODES[request.param]
    if not _supports(args):
        pytest.skip(f"this ComfyUI has no {' '.join(args)} (it came with dynamic VRAM, in 0.15)")
    with comfy_server.running_server(tmp_path_factory.mktemp("comfyui"), tiny_model_dir, HOW_TO,
                                     extra_args=("--verbose", "DEBUG", *args)) as running:
        yield running


def _log_since(server, offset: int) -> str:
    return server.log_text()[offset:]


def test_networks_load_are_reused_unload_on_free_and_load_again(server) -> None:
    graph = _small(json.loads((REPO / "example_workflows" / "api" / FIX_FACE).read_text()))

    offset = len(server.log_text())
    server.run(_small(graph, VExpressSampler={"seed": 1}))
    first = set(LOADED.findall(_log_since(server, offset)))
    # The loader makes one patcher per network; each stage asks for its own (names from nodes/memory_management.py).
    assert {"VExpress_Vae", "VExpress_ReferenceNet", "VExpress_DenoisingUnet"} <= first, first

    # /free posted while the second prompt runs: ComfyUI's worker reads its flags after each prompt (a /free that
    # arrives while the worker is between prompts may wait for its next wake-up, up to 1000 s).
    offset = len(server.log_text())
    api = comfy_server.api
    prompt_id = api.queue(server.url, _small(graph, VExpressSampler={"seed": 2}))
    api.post_json(server.url, "/free", {"unload_models": True, "free_memory": True})
    assert api.error_of(api.wait(server.url, prompt_id, 600)) is None
    deadline = time.monotonic() + 300
    while not first <= set(UNLOADED.findall(_log_since(server, offset))):
        assert time.monotonic() < deadline, _log_since(server, offset)[-3000:]
        time.sleep(0.2)
    log = _log_since(server, offset)
    assert LOADED.findall(log) == []  # the second prompt reused the loaded networks
    assert log.index("Prompt executed") < UNLOADED.search(log).start()  # unloaded after it, by /free

    offset = len(server.log_text())
    server.run(_small(graph, VExpressSampler={"seed": 3}))
    assert set(LOADED.findall(_log_since(server, offset))) == first
