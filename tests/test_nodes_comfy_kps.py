"""The ComfyUI kps nodes through their V3 interface, in-process (split from test_nodes_comfy.py, whose fixtures
they share through conftest.py): ExtractKps from frames and video, RetargetKps, SaveKps / LoadKps, and what the
face nodes say without a face detector."""

from __future__ import annotations

import numpy as np
import pytest

from tests import comfy_harness
from tests.comfy_nodes import SMALL

pytestmark = pytest.mark.comfyui
if comfy_harness.comfyui_path() is None:
    pytest.skip(f"ComfyUI node tests need a ComfyUI checkout: {comfy_harness.HOW_TO}", allow_module_level=True)


# ----------------------------------------------------------------------------------------------------- kps


def test_extract_kps_from_images_and_video(node, dirs, portrait):
    from comfy_api.latest import InputImpl

    frames = portrait.repeat(5, 1, 1, 1)
    track, preview = node("kps").VExpressExtractKps.execute(images=frames, fps=12.5, face="largest")
    assert track.num_frames == 5 and track.fps == 12.5 and (track.width, track.height) == (512, 512)
    assert preview.shape[0] == 5 and preview.shape[-1] == 3
    video = InputImpl.VideoFromFile(str(dirs["input"] / "vexpress_driving.mp4"))
    track, _ = node("kps").VExpressExtractKps.execute(video=video, fps=1.0, face="most_confident")
    assert track.num_frames == 30 and track.fps == pytest.approx(10.0) and track.width == 256


def test_retarget_strategies(node, portrait, dirs, lib):
    driving = lib("inputs.kps").load_kps(dirs["input"] / "vexpress_driving_other_kps.pth")
    import dataclasses

    driving = dataclasses.replace(driving, fps=30.0, width=512, height=512)
    retarget = node("kps").VExpressRetargetKps
    for strategy in ("no_retarget", "offset_retarget", "naive_retarget"):
        track, preview = retarget.execute(reference_image=portrait, strategy=strategy, frame_count=20, fps=10.0,
                                          compat="fixed", driving_kps=driving, **SMALL)
        assert track.num_frames == 20 and track.fps == 10.0 and (track.width, track.height) == (64, 64)
        assert preview.shape[0] == 20
    keep, _ = retarget.execute(reference_image=portrait, strategy="no_retarget", frame_count=0, fps=10.0,
                               compat="original", driving_kps=driving, width=512, height=512)
    assert keep.num_frames == driving.num_frames and np.allclose(keep.points, driving.points)
    with pytest.raises(Exception, match="driving kps"):
        retarget.execute(reference_image=portrait, strategy="offset_retarget", frame_count=10, fps=10.0,
                         compat="fixed", **SMALL)


def test_save_and_load_kps_in_every_format(node, dirs, fix_face_kps):
    import dataclasses

    track = dataclasses.replace(fix_face_kps[0], fps=12.0)
    kps_nodes = node("kps")
    for fmt, suffix in (("npz", ".npz"), ("json", ".json"), ("pth (original)", ".pth")):
        out = kps_nodes.VExpressSaveKps.execute(kps=track, filename_prefix="kps/roundtrip", format=fmt)
        shown = out.ui["text"][0]
        name = shown.split(" ")[0]
        card = out.ui["images"][0]  # what the stock frontend draws on the node: a PNG in the temp folder
        assert card["type"] == "temp" and (dirs["temp"] / card["subfolder"] / card["filename"]).is_file()
        assert name.endswith(suffix)
        saved = dirs["output"] / name
        (dirs["input"] / saved.name).write_bytes(saved.read_bytes())
        assert saved.name in kps_nodes._kps_files()
        assert kps_nodes.VExpressLoadKps.validate_inputs(kps_file=saved.name) is True
        loaded, _ = kps_nodes.VExpressLoadKps.execute(kps_file=saved.name, fps_if_unknown=30.0)
        assert np.allclose(loaded.points, track.points)
        assert loaded.fps == (30.0 if suffix == ".pth" else 12.0)
    assert kps_nodes.VExpressLoadKps.validate_inputs(kps_file="missing.npz") != True  # noqa: E712


def test_face_nodes_say_what_is_missing_without_insightface(node, portrait, monkeypatch, lib):
    import sys

    VExpressError = lib("errors").VExpressError

    monkeypatch.setitem(sys.modules, "insightface", None)
    monkeypatch.setitem(sys.modules, "insightface.model_zoo", None)
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # else "auto" would fall back to MediaPipe
    with pytest.raises(VExpressError, match="pip install insightface"):
        node("kps").VExpressRetargetKps.execute(reference_image=portrait, strategy="fix_face", frame_count=3,
                                                fps=10.0, compat="fixed", **SMALL)
