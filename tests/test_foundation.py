"""The package's foundations: light imports, honest install metadata, and the test media themselves."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

from tests import media

REPO_ROOT = Path(__file__).resolve().parents[1]
OWNED_BY_COMFYUI = {"torch", "torchvision", "torchaudio"}


def _requirement_name(requirement: str) -> str:
    for separator in "<>=!~;[ ":
        requirement = requirement.split(separator)[0]
    return requirement.strip().lower().replace("_", "-")


def _run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    return result.stdout.strip()


def test_top_level_import_is_light() -> None:
    loaded = _run_python(
        "import sys, vexpress_model, vexpress_model.errors; "
        "print(','.join(m for m in ('torch', 'diffusers', 'transformers', 'cv2', 'av', 'insightface', 'onnxruntime') "
        "if m in sys.modules))"
    )
    assert loaded == "", f"`import vexpress_model` pulled in heavy modules: {loaded}"


def test_every_library_module_imports_without_side_effects(tmp_path: Path) -> None:
    """Importing every module constructs nothing on a device and writes no files."""
    import vexpress_model

    names = [m.name for m in pkgutil.walk_packages(vexpress_model.__path__, "vexpress_model.")]
    assert names, "no library modules found"
    code = (
        "import importlib, sys, os\n"
        f"os.chdir({str(tmp_path)!r})\n"
        f"for name in {names!r}:\n"
        "    if name.endswith('__main__'):\n"
        "        continue\n"
        "    importlib.import_module(name)\n"
        "import torch\n"
        "print(torch.cuda.is_initialized(), 'comfy' in sys.modules)\n"
    )
    assert _run_python(code) == "False False"
    assert list(tmp_path.iterdir()) == [], "importing the library wrote files"


def test_install_requirements_leave_torch_to_comfyui() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    assert not declared & OWNED_BY_COMFYUI
    assert project["name"] == "comfyui-vexpress"
    assert project["requires-python"] == ">=3.10"
    for requirement in project["dependencies"]:
        version = requirement.split(";")[0]  # an environment marker (python_version < '3.13') is no pin
        assert "==" not in version and "<" not in version, f"pin in {requirement}: use lower bounds only"

    mirrored = {
        _requirement_name(line)
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert mirrored == declared, "requirements.txt must mirror pyproject.toml's dependencies"


def test_registry_metadata_present() -> None:
    comfy = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"):
        assert comfy.get(key), f"[tool.comfy] {key} missing"


def test_pip_install_keeps_the_installed_torch(tmp_path: Path) -> None:
    """Resolving `pip install .` in an environment that has torch installs no torch of its own."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-build-isolation",
         "--report", str(report), str(REPO_ROOT)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    to_install = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert not to_install & OWNED_BY_COMFYUI, f"pip would replace ComfyUI's torch: {to_install}"
    assert "comfyui-vexpress" in to_install


@pytest.mark.parametrize("rate", media.AUDIO_RATES)
@pytest.mark.parametrize("layout,channels", [("mono", 1), ("stereo", 2)])
@pytest.mark.parametrize("fmt", media.AUDIO_FORMATS)
def test_media_audio_files(media_dir: Path, rate: int, layout: str, channels: int, fmt: str) -> None:
    import av

    with av.open(str(media_dir / f"speech_{rate}_{layout}.{fmt}")) as container:
        stream = container.streams.audio[0]
        assert (stream.rate, stream.channels) == (rate, channels)
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
    duration = samples.size / channels / rate
    assert abs(duration - 2.0) < 0.08
    assert np.abs(samples).max() > 0.1, "speech-like audio must not be silent"


def test_media_portrait_and_kps(media_dir: Path, portrait_rgb: np.ndarray) -> None:
    import torch
    from PIL import Image

    assert portrait_rgb.shape == (512, 512, 3) and portrait_rgb.dtype == np.uint8
    assert np.array_equal(np.asarray(Image.open(media_dir / "portrait.png")), portrait_rgb)
    track = torch.load(media_dir / "driving_kps.pth", weights_only=False)
    assert isinstance(track, list) and len(track) == 60
    assert all(isinstance(p, np.ndarray) and p.shape == (3, 2) and p.dtype == np.float32 for p in track)
