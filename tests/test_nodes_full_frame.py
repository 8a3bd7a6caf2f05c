"""FaceCrop and PasteBack through their V3 interface, in-process in ComfyUI (see tests/comfy_harness.py)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from tests import comfy_harness

pytestmark = pytest.mark.comfyui
if comfy_harness.comfyui_path() is None:
    pytest.skip(f"ComfyUI node tests need a ComfyUI checkout: {comfy_harness.HOW_TO}", allow_module_level=True)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, tiny_model_dir):
    comfy_harness.import_comfyui()
    comfy_harness.import_pack()
    comfy_harness.setup_folders(tmp_path_factory.mktemp("comfy_full_frame"), tiny_model_dir)
    return importlib.import_module(f"{comfy_harness.PACK_MODULE}.nodes.full_frame")


@pytest.fixture(scope="module")
def landscape():
    import torch
    from PIL import Image

    image = Image.open(comfy_harness.REPO_ROOT / "example_workflows" / "input" / "vexpress_landscape.jpg")
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


def test_face_crop_and_paste_back(nodes, landscape) -> None:
    import torch

    cropped, crop = nodes.VExpressFaceCrop.execute(image=landscape, width=64, height=64, crop_scale=3.4,
                                                   border="pad", face="largest", face_detector="auto")
    assert tuple(cropped.shape) == (1, 64, 64, 3)
    assert crop.source_width == 960 and crop.source_height == 540
    frames = torch.rand((20, 64, 64, 3), generator=torch.Generator().manual_seed(0))
    (full,) = nodes.VExpressPasteBack.execute(images=frames, original_image=landscape, crop=crop, feather=0.1,
                                              color_match="off", max_side=0)
    assert tuple(full.shape) == (20, 540, 960, 3)
    photo = (landscape[0] * 255).round()
    pasted = (full * 255).round()
    outside = torch.ones((540, 960), dtype=torch.bool)
    outside[max(crop.top, 0) : crop.bottom, max(crop.left, 0) : crop.right] = False
    assert torch.equal(pasted[:, outside], photo[outside].expand(20, -1, -1))
    centre = (slice(None), crop.top + crop.size // 2, crop.left + crop.size // 2)
    assert not torch.equal(pasted[centre], photo[centre[1:]].expand(20, -1))
    (small,) = nodes.VExpressPasteBack.execute(images=frames[:2], original_image=landscape, crop=crop, feather=0.1,
                                               color_match="clip", max_side=480)
    assert tuple(small.shape) == (2, 270, 480, 3)
