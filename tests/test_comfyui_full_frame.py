"""The full-frame example workflow (LoadImage -> FaceCrop -> ... -> SaveVideo pasting back) in a real ComfyUI server:
the video has the landscape photo's size, outside the face crop it is the photo as LoadImage gave it to the graph
(within H.264 rounding), inside it is the generated face. Same server set-up as tests/test_comfyui_integration.py
(tests/comfy_server.py; needs COMFYUI_PATH and COMFYUI_PYTHON, else skipped with a how-to)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests import comfy_server
from tests.comfy_server import FPS, REPO, expected_frames, small_graph

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]
if not os.environ.get("COMFYUI_PATH") or not os.environ.get("COMFYUI_PYTHON"):
    pytest.skip(f"no ComfyUI to test against: {comfy_server.HOW_TO}", allow_module_level=True)

server = comfy_server.server  # the module's server fixture

# The stand-in detector puts a large face in the middle of any picture; a tight crop leaves a border around it.
CROP_SCALE = 1.2
WORKFLOW = (REPO / "example_workflows" / "api"
            / "V-Express 6 - Whole photo, face off-centre (FaceCrop, paste-back in SaveVideo).json")
PHOTO = REPO / "example_workflows" / "input" / "vexpress_landscape.jpg"


def _decode(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])])


def _crop_the_server_makes(photo: np.ndarray, tmp_path: Path):
    """The crop FaceCrop plans in the server, whose models/insightface holds the stand-in detector."""
    from tests.fake_detector import write_fake_buffalo_l
    from vexpress_model.conditioning.face_crop import crop_reference
    from vexpress_model.inputs.face_detection import FaceDetector

    write_fake_buffalo_l(tmp_path / "insightface")
    with FaceDetector(tmp_path / "insightface", device="cpu") as detector:
        return crop_reference(photo, 64, 64, detector=detector, crop_scale=CROP_SCALE).crop


def _photo_as_loaded(server) -> np.ndarray:
    """The photo as the server's LoadImage hands it to the graph, saved losslessly by core SaveImage.

    Not the file decoded here: LoadImage decodes JPEGs with Pillow up to 0.3.x and with FFmpeg (PyAV) in 0.33,
    whose decoder and YUV->RGB conversion differ from Pillow's by 0.65 grey levels on average (up to 19) on this
    photo. The paste-back keeps whatever pixels it is given, so that image is what the video must match."""
    from PIL import Image

    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": PHOTO.name}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "photo_as_loaded"}}}
    _, files = server.run(graph)
    (png,) = [f for f in files if f.suffix == ".png"]
    return np.asarray(Image.open(png).convert("RGB"))


def test_full_frame_workflow_pastes_the_face_into_the_photo(server, tmp_path: Path) -> None:
    from vexpress_model.outputs.video import write_video

    graph = small_graph(json.loads(WORKFLOW.read_text()), VExpressFaceCrop={"crop_scale": CROP_SCALE})
    kinds = {node["class_type"] for node in graph.values()}
    assert {"VExpressFaceCrop", "VExpressSaveVideo"} <= kinds and "VExpressPasteBack" not in kinds
    save = next(n["inputs"] for n in graph.values() if n["class_type"] == "VExpressSaveVideo")
    assert "full_image" in save and "crop" in save  # SaveVideo pastes back while it writes
    crf = next(n["inputs"]["crf"] for n in graph.values() if n["class_type"] == "VExpressSaveVideo")
    _, files = server.run(graph)
    videos = [f for f in files if f.suffix == ".mp4"]
    assert len(videos) == 1, files
    video = _decode(videos[0])
    photo = _photo_as_loaded(server)
    assert video.shape == (expected_frames("vexpress_speech.wav", FPS), *photo.shape)

    crop = _crop_the_server_makes(photo, tmp_path)
    outside = np.ones(photo.shape[:2], bool)
    outside[max(crop.top, 0) : crop.bottom, max(crop.left, 0) : crop.right] = False
    assert outside.mean() > 0.4
    write_video(tmp_path / "photo.mp4", [np.repeat(photo[None], 2, axis=0)], fps=FPS, crf=crf)
    rounding = np.abs(_decode(tmp_path / "photo.mp4").astype(np.int16) - photo)[:, outside]
    error = np.abs(video.astype(np.int16) - photo)[:, outside]
    assert error.mean() <= rounding.mean() + 0.3, (error.mean(), rounding.mean())
    inner = (slice(None), slice(crop.top + crop.size // 3, crop.bottom - crop.size // 3),
             slice(crop.left + crop.size // 3, crop.right - crop.size // 3))
    assert np.abs(video[inner].astype(np.int16) - photo[inner[1:]]).mean() > 10  # the generated face, not the photo
