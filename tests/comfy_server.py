"""A real ComfyUI server with this pack installed, for the tests that drive it over HTTP or through a browser.

``COMFYUI_PATH`` (a ComfyUI checkout, >= 0.3.64) and ``COMFYUI_PYTHON`` (the Python of an environment with ComfyUI's
and this pack's requirements; ``scripts/test.sh`` builds ``.venv-comfy`` for it) say which. The server runs with
``--cpu`` on 127.0.0.1 and a free port, with its own ``--base-directory`` (models, input, output, temp, user) in a
temporary folder, so the checkout is only read; the pack is linked into its ``custom_nodes`` as
``ComfyUI-V-Express``, a tiny random-weight model folder goes to ``models/vexpress/tiny`` (and other names on
request), the stand-in face
detector to ``models/insightface`` and the example inputs to ``input/``. It is stopped when the context ends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACK_FOLDER = "ComfyUI-V-Express"
START_TIMEOUT_S = 300


def _load_api_example():
    """scripts/api_example.py (standard-library HTTP client) as a module."""
    spec = importlib.util.spec_from_file_location("api_example", REPO / "scripts" / "api_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


api = _load_api_example()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, base: Path, process: subprocess.Popen, url: str, log: Path) -> None:
        self.base, self.process, self.url, self.log = base, process, url, log

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def run(self, graph: dict, timeout: float = 600) -> tuple[dict, list[Path]]:
        prompt_id = api.queue(self.url, graph)
        entry = api.wait(self.url, prompt_id, timeout)
        problem = api.error_of(entry)
        assert problem is None, f"{problem}\n{self.log_text()[-4000:]}"
        files = [api.download(self.url, item, self.base / "downloads") for item in api.output_files(entry)]
        return entry, files


@contextlib.contextmanager
def running_server(base: Path, model_folder: Path, how_to: str, model_names: tuple[str, ...] = ("tiny",),
                   extra_args: tuple[str, ...] = (), *, restart: bool = False) -> Iterator[Server]:
    """Start ComfyUI in ``base`` with the pack and ``model_folder`` as ``models/vexpress/<name>`` for each of
    ``model_names`` (``extra_args``: more command-line options for main.py); stop it after. ``restart``: ``base``
    was set up by an earlier server; start on it as it is (output/ and all), as a server restarted after a crash
    does."""
    comfy_path = os.environ.get("COMFYUI_PATH")
    python = os.environ.get("COMFYUI_PYTHON")
    if not comfy_path or not python:
        pytest.skip(f"no ComfyUI to test against: {how_to}")
    comfy_path = Path(comfy_path).expanduser()
    if not (comfy_path / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={comfy_path} has no main.py: {how_to}")

    from tests.fake_detector import write_fake_buffalo_l

    if not restart:
        (base / "custom_nodes").mkdir(parents=True)
        (base / "custom_nodes" / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
        for name in model_names:
            shutil.copytree(model_folder, base / "models" / "vexpress" / name)
        write_fake_buffalo_l(base / "models" / "insightface")
        shutil.copytree(REPO / "example_workflows" / "input", base / "input")
        (base / "user").mkdir()
    port = _free_port()
    log = base / "comfyui.log"
    if restart and log.exists():  # keep the earlier server's log beside the new one
        log.replace(log.with_name(f"comfyui.{int(time.time() * 1000)}.log"))
    # The database too goes under base: its default lies inside the checkout, which must stay untouched.
    command = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
               str(base), "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}", "--disable-auto-launch",
               "--disable-api-nodes", *extra_args]
    started = time.monotonic()
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, cwd=comfy_path, stdout=handle, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    url = f"http://127.0.0.1:{port}"
    running = Server(base, process, url, log)
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{running.log_text()[-4000:]}")
            try:
                api.get_json(url, "/object_info/VExpressSampler", timeout=5)
                break
            except api.ComfyError:
                if time.monotonic() - started > START_TIMEOUT_S:
                    pytest.fail(f"ComfyUI did not come up in {START_TIMEOUT_S} s:\n{running.log_text()[-4000:]}")
                time.sleep(1)
        print(f"\nComfyUI up at {url} after {time.monotonic() - started:.1f} s (log: {log})")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

# ------------------------------------------------------------------------------------ shared by the server tests

FPS = 6.0
# Small settings for the tiny model: every example workflow runs in seconds on a CPU.
SMALL = {
    "LoadVExpressModels": {"model": "tiny"},
    "VExpressAudioEmbed": {"fps": FPS},
    "VExpressRetargetKps": {"width": 64, "height": 64},
    "VExpressFaceCrop": {"width": 64, "height": 64},
    "VExpressSampler": {"width": 64, "height": 64, "steps": 2, "context_frames": 8, "context_overlap": 2},
}
HOW_TO = (
    "put a ComfyUI checkout (>= 0.3.64) at ../shared/comfyui/ComfyUI beside the repository (or set COMFYUI_PATH) "
    "and run `bash scripts/test.sh`, which builds .venv-comfy and sets COMFYUI_PYTHON; see this file's docstring"
)


def small_graph(graph: dict, **extra) -> dict:
    graph = json.loads(json.dumps(graph))
    for node in graph.values():
        for key, value in {**SMALL.get(node["class_type"], {}), **extra.get(node["class_type"], {})}.items():
            if not isinstance(node["inputs"].get(key), list):  # keep links
                node["inputs"][key] = value
    return graph


def expected_frames(audio_file: str, fps: float) -> int:
    import math

    import av

    with av.open(str(REPO / "example_workflows" / "input" / audio_file)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        rate = stream.rate
    return max(1, math.floor(samples * 16000 / rate / 16000 * fps + 0.5))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    with running_server(tmp_path_factory.mktemp("comfyui"), tiny_model_dir, HOW_TO) as running:
        yield running
