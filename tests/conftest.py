"""Shared test fixtures: locations of the shared reference material, input media, tiny models.

The shared folder (`../shared` beside the checkout, or `$VEXPRESS_SHARED`) holds the parity fixtures and the
key manifests of the released checkpoints. Nothing here downloads anything.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np
import pytest

from tests import comfy_harness, media
from tests.comfy_nodes import FPS, SMALL

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    configured = os.environ.get("VEXPRESS_SHARED")
    return Path(configured) if configured else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not (path / "vexpress" / "SPEC.md").is_file():
        pytest.fail(
            f"shared reference folder not found at {path}: place it beside the checkout or set VEXPRESS_SHARED"
        )
    return path


@pytest.fixture(scope="session")
def parity_dir(shared_dir: Path) -> Path:
    """The parity fixtures: tiny model, inputs and the original implementation's outputs."""
    return shared_dir / "vexpress" / "parity"


@pytest.fixture(scope="session")
def parity_model_dir(parity_dir: Path) -> Path:
    """The shared tiny model folder in the released layout (`model_ckpts/`)."""
    return parity_dir / "tiny_model" / "model_ckpts"


@pytest.fixture(scope="session")
def manifests_dir(shared_dir: Path) -> Path:
    return shared_dir / "vexpress" / "manifests"


@pytest.fixture(scope="session")
def real_configs_dir(shared_dir: Path) -> Path:
    return shared_dir / "vexpress" / "real_configs" / "model_ckpts"


@pytest.fixture(scope="session")
def portrait_rgb() -> np.ndarray:
    """A real photographic portrait: the public-domain astronaut photo, 512x512 RGB uint8."""
    return media.portrait_rgb()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the portrait (PNG and JPEG), speech-like audio in several formats and a kps file."""
    return media.write_media_folder(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete random-weight tiny model folder in the released layout (`model_ckpts/`), seed 0."""
    from vexpress_model.testing.random_model import write_random_model_folder

    return write_random_model_folder(tmp_path_factory.mktemp("tiny_model") / "model_ckpts", size="tiny", seed=0)


@pytest.fixture(scope="session")
def insightface_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An insightface root holding the stand-in detector (one face, ``tests/fake_detector.py``)."""
    from tests.fake_detector import write_fake_buffalo_l

    root = tmp_path_factory.mktemp("insightface_models")
    write_fake_buffalo_l(root)
    return root


@pytest.fixture(scope="session")
def tiny_model_with_detector(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model folder plus the stand-in insightface detector in `insightface_models/`."""
    import shutil

    from tests.fake_detector import write_fake_buffalo_l

    folder = tmp_path_factory.mktemp("tiny_model_detector") / "model_ckpts"
    shutil.copytree(tiny_model_dir, folder)
    write_fake_buffalo_l(folder / "insightface_models")
    return folder


# ------------------------------------------------------------ ComfyUI nodes (tests/test_nodes_comfy*.py)


@pytest.fixture(scope="session")
def comfy() -> Path:
    return comfy_harness.import_comfyui()


@pytest.fixture(scope="session")
def pack(comfy):
    return comfy_harness.import_pack()


@pytest.fixture(scope="session")
def node(pack):
    """``node("kps")`` -> the pack's ``nodes.kps`` module."""
    return lambda name: importlib.import_module(f"{comfy_harness.PACK_MODULE}.nodes.{name}")


@pytest.fixture(scope="session")
def lib(pack):
    """``lib("errors")`` -> the pack's copy of ``vexpress_model.errors`` (the classes the nodes use)."""
    return comfy_harness.import_library


@pytest.fixture(scope="session")
def dirs(pack, tmp_path_factory, tiny_model_dir):
    return comfy_harness.setup_folders(tmp_path_factory.mktemp("comfy"), tiny_model_dir)


@pytest.fixture(scope="session")
def pipe(node, dirs):
    return node("loader").LoadVExpressModels.execute(model="tiny", dtype="auto", offload="auto",
                                                      download_missing=False)[0]


@pytest.fixture(scope="session")
def audio(lib):
    """The shipped example speech as a core AUDIO (16 kHz mono, about 3.5 s)."""
    import torch

    speech = comfy_harness.REPO_ROOT / "example_workflows" / "input" / "vexpress_speech.wav"
    decoded = lib("inputs.audio").decode_audio(speech)
    return {"waveform": torch.from_numpy(decoded.waveform)[None], "sample_rate": decoded.sample_rate}


@pytest.fixture(scope="session")
def portrait():
    import torch
    from PIL import Image

    image = Image.open(comfy_harness.REPO_ROOT / "example_workflows" / "input" / "vexpress_portrait.jpg")
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


@pytest.fixture(scope="session")
def embeds(node, pipe, audio):
    return node("audio").VExpressAudioEmbed.execute(pipe=pipe, audio=audio, fps=FPS)


@pytest.fixture(scope="session")
def fix_face_kps(node, portrait, embeds):
    return node("kps").VExpressRetargetKps.execute(
        reference_image=portrait, strategy="fix_face", frame_count=embeds[2], fps=embeds[3], compat="fixed", **SMALL
    )


@pytest.fixture()
def good_args(tiny_model_with_detector: Path, media_dir: Path, tmp_path: Path) -> dict[str, str]:
    return {
        "--model_dir": str(tiny_model_with_detector),
        "--reference_image_path": str(media_dir / "portrait.png"),
        "--audio_path": str(media_dir / "speech_16000_mono.wav"),
        "--retarget_strategy": "fix_face",
        "--num_inference_steps": "1",
        "--image_width": "64",
        "--image_height": "64",
        "--device": "cpu",
        "--output_path": str(tmp_path / "out" / "video.mp4"),
        "--no_download": "",
        "--quiet": "",
    }
