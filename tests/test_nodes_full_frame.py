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


def _decode(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])])


def test_save_video_pastes_back_chunk_by_chunk(nodes, landscape, monkeypatch) -> None:
    """SaveVideo with full_image + crop writes what PasteBack -> SaveVideo writes, pasting one chunk of full
    frames at a time, each handed to the encoder before the next is pasted."""
    import torch

    video_nodes = importlib.import_module(f"{comfy_harness.PACK_MODULE}.nodes.video")
    paste_back = comfy_harness.import_library("outputs.paste_back")
    video_module = comfy_harness.import_library("outputs.video")
    _, crop = nodes.VExpressFaceCrop.execute(image=landscape, width=64, height=64, crop_scale=3.4, border="pad",
                                             face="largest", face_detector="auto")
    frames = torch.rand((40, 64, 64, 3), generator=torch.Generator().manual_seed(1))
    settings = {"feather": 0.15, "color_match": "clip", "max_side": 0}
    (full,) = nodes.VExpressPasteBack.execute(images=frames, original_image=landscape, crop=crop, **settings)
    save = video_nodes.VExpressSaveVideo
    common = {"fps": 25.0, "crf": 17}
    via_images = save.execute(images=full, filename_prefix="vexpress/pasted", **common)

    events: list[tuple[str, int]] = []
    encoded: list[np.ndarray] = []
    real_paste, real_write = paste_back.PasteBack.paste, video_module.write_video

    def spy_paste(self, chunk):
        out = real_paste(self, chunk)
        events.append(("paste", len(out)))
        return out

    def spy_write(path, chunks, **kwargs):
        def counted():
            for chunk in chunks:
                events.append(("encode", len(chunk)))
                encoded.append(np.array(chunk))
                yield chunk
        return real_write(path, counted(), **kwargs)

    monkeypatch.setattr(paste_back.PasteBack, "paste", spy_paste)
    monkeypatch.setattr(video_module, "write_video", spy_write)
    streamed = save.execute(images=frames, filename_prefix="vexpress/streamed", full_image=landscape, crop=crop,
                            **settings, **common)
    chunk = nodes.PASTE_CHUNK_FRAMES
    sizes = [chunk, chunk, 40 - 2 * chunk]
    assert events == [event for size in sizes for event in (("paste", size), ("encode", size))]
    # The frames the encoder got are PasteBack's frames, exactly.
    np.testing.assert_array_equal(np.concatenate(encoded), (full.numpy() * 255).round().astype(np.uint8))

    import folder_paths

    out_dir = folder_paths.get_output_directory()
    files = [f"{out_dir}/vexpress/{out.ui.as_dict()['images'][0]['filename']}" for out in (via_images, streamed)]
    reference, result = _decode(files[0]), _decode(files[1])
    assert result.shape == (40, 540, 960, 3) == reference.shape
    assert np.abs(result.astype(np.int16) - reference).max() <= 2  # the same frames in, H.264 rounding at most
    # Half-width output through max_side, and only both paste inputs together.
    small = save.execute(images=frames[:2], filename_prefix="vexpress/small", full_image=landscape, crop=crop,
                         feather=0.1, color_match="off", max_side=480, **common)
    assert small.args[0].get_dimensions() == (480, 270)
    errors = comfy_harness.import_library("errors")
    with pytest.raises(errors.InputError, match="both full_image and crop"):
        save.execute(images=frames[:2], filename_prefix="vexpress/half", crop=crop, **common)


def test_retarget_kps_cuts_the_driving_face_by_the_crop_rule(nodes, landscape) -> None:
    kps_nodes = importlib.import_module(f"{comfy_harness.PACK_MODULE}.nodes.kps")
    face_crop = comfy_harness.import_library("conditioning.face_crop")
    kps_module = comfy_harness.import_library("inputs.kps")
    face_image, crop = nodes.VExpressFaceCrop.execute(image=landscape, width=64, height=64, crop_scale=2.5,
                                                      border="pad", face="largest", face_detector="auto")
    assert crop.crop_scale == 2.5
    # A driving face off-centre in a 1280x720 video, moving right.
    base = np.array([[700.0, 200.0], [760.0, 202.0], [730.0, 240.0]], dtype=np.float32)
    driving = kps_module.KpsTrack(np.stack([base + [4.0 * t, 0.0] for t in range(6)]), fps=25.0, width=1280,
                                  height=720)
    common = {"reference_image": face_image, "strategy": "no_retarget", "width": 64, "height": 64, "frame_count": 0,
              "fps": 25.0, "compat": "fixed", "driving_kps": driving}
    track, _ = kps_nodes.VExpressRetargetKps.execute(crop=crop, **common)
    expected, _ = face_crop.normalise_driving_track(driving, 64, 64, crop_scale=2.5)
    np.testing.assert_allclose(track.points, expected.points, atol=1e-4)
    assert np.abs(track.points[0].mean(axis=0) - [32, 32]).max() < 16  # the face near the middle of the crop
    # Without the crop the whole 1280x720 video is squeezed into 64x64: the face small and off-centre.
    raw, _ = kps_nodes.VExpressRetargetKps.execute(**common)
    assert np.abs(raw.points - track.points).max() > 5
    # offset_retarget on the cut-out driving face: the reference face follows it, steadily to the right.
    offset, _ = kps_nodes.VExpressRetargetKps.execute(crop=crop, **{**common, "strategy": "offset_retarget"})
    steps = np.diff(offset.points, axis=0)
    assert offset.points.shape == (6, 3, 2) and (steps[..., 0] > 0).all()
    np.testing.assert_allclose(steps[..., 1], 0.0, atol=0.01)  # the driving eyes tilt a little
