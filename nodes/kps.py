"""Keypoint nodes: extract a track from frames, load and save kps files, retarget a track onto the reference face.

A track (``VEXPRESS_KPS``) is the library's ``KpsTrack``: float32 ``[T, 3, 2]`` pixel coordinates (eye on the image
left, eye on the image right, nose tip) with the frame rate and frame size they belong to when known.
"""

from __future__ import annotations

import hashlib
import os

from ..vexpress_model.options import FACE_SELECTION_LABELS, RETARGET_STRATEGIES
from . import _comfy, _types, _widgets
from ._comfy import io, ui
from ._texts import NodeTexts

CATEGORY = "V-Express/kps"
KPS_EXTENSIONS = (".pth", ".pt", ".npz", ".json")
PREVIEW_MAX_SIDE = 256
CAPTION_HEIGHT = 48
# SaveKps: the pack's formats (fps and frame size kept) and the original kps.pth.
KPS_SAVE_FORMATS = ("npz", "json", "pth (original)")

def _preview(track) -> object:
    """The track drawn as V-Kps images (what the model sees), at most PREVIEW_MAX_SIDE pixels on the long side."""
    from ..vexpress_model.conditioning.kps_images import draw_kps_preview

    return _types.uint8_to_image(draw_kps_preview(track.points, track.width, track.height, PREVIEW_MAX_SIDE))


def _saved_card(track, caption: str) -> object:
    """The first frame of the track drawn as a V-Kps image with ``caption`` written under it: IMAGE [1, H, W, 3]."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from ..vexpress_model.conditioning.kps_images import draw_kps_preview

    frame = draw_kps_preview(track.points[:1], track.width, track.height, PREVIEW_MAX_SIDE)[0]
    width = max(frame.shape[1], PREVIEW_MAX_SIDE)
    card = Image.new("RGB", (width, frame.shape[0] + CAPTION_HEIGHT), (24, 26, 32))
    card.paste(Image.fromarray(frame), ((width - frame.shape[1]) // 2, 0))
    draw = ImageDraw.Draw(card)
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        font = ImageFont.load_default()
    draw.multiline_text((6, frame.shape[0] + 6), _wrap(caption, width // 7), fill=(235, 235, 235), font=font)
    return _types.uint8_to_image(np.asarray(card)[None])


def _wrap(text: str, columns: int) -> str:
    """``text`` broken into lines of at most ``columns`` characters (file names have no spaces to break at)."""
    return "\n".join(text[start : start + columns] for start in range(0, len(text), columns))


def _insightface_roots() -> list[str]:
    from . import folders

    return folders.roots(folders.INSIGHTFACE)


def make_face_detector(backend: str = "auto"):
    """A face detector: insightface from the first registered insightface folder that holds its model
    (models/insightface/), or MediaPipe (``backend``: auto, insightface or mediapipe; see
    ``inputs/face_backends.py``).

    ONNX Runtime runs insightface on the GPU when onnxruntime-gpu is installed and ComfyUI is not in --cpu mode.
    """
    from ..vexpress_model.errors import ModelFolderError
    from ..vexpress_model.inputs import face_detection
    from ..vexpress_model.inputs.face_backends import create_face_detector

    roots = _insightface_roots()
    root = roots[0] if roots else "models/insightface"
    for candidate in roots:
        try:
            face_detection.find_detector_model(candidate)
        except ModelFolderError:
            continue
        root = candidate
        break
    device = _comfy.model_management().get_torch_device()
    if device.type == "cuda":
        return create_face_detector(backend, root, device="cuda", gpu_id=device.index or 0)
    return create_face_detector(backend, root, device="cpu")



# ------------------------------------------------------------------------------------------------- extract


class VExpressExtractKps(io.ComfyNode):
    """Driving frames (IMAGE batch or VIDEO) -> the face's keypoint track and its V-Kps drawing."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = [
            io.Image.Input("images", optional=True),
            io.Video.Input("video", optional=True),
            _widgets.fps("fps"),
            io.Combo.Input("face", options=list(FACE_SELECTION_LABELS), default="nearest_previous"),
            _widgets.face_detector(optional=True),
        ]
        outputs = [_types.KpsType.Output("kps"), io.Image.Output("kps_images")]
        return NodeTexts("VExpressExtractKps", CATEGORY).schema(inputs, outputs)

    @classmethod
    def execute(cls, fps: float, face: str, images=None, video=None, face_detector: str = "auto") -> io.NodeOutput:
        from ..vexpress_model.errors import InputError
        from ..vexpress_model.inputs import face_detection
        from .progress import stage_progress

        if images is None and video is None:
            raise InputError("ExtractKps needs driving frames: connect 'images' (with its fps) or 'video'")
        if video is not None:
            components = video.get_components()
            images = components.images
            fps = float(components.frame_rate)
        frames = _types.image_to_uint8(images)
        progress = stage_progress(len(frames))  # each update is also a Cancel check
        with make_face_detector(face_detector) as detector:
            track = face_detection.extract_kps_track(
                frames,
                detector,
                fps=float(fps),
                select=FACE_SELECTION_LABELS[face],
                progress=lambda done, total: progress(done),
            )
        return io.NodeOutput(track, _preview(track))


# ------------------------------------------------------------------------------------------------ load/save


def _kps_files() -> list[str]:
    root = _comfy.folder_paths.get_input_directory()
    found = []
    for directory, _dirs, files in os.walk(root, followlinks=True):
        for name in files:
            if name.lower().endswith(KPS_EXTENSIONS) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/"))
    return sorted(found)


class VExpressLoadKps(io.ComfyNode):
    """A kps file from the input folder (original kps.pth, or the pack's .npz / .json) -> a track."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = [io.Combo.Input("kps_file", options=_kps_files()), _widgets.fps("fps_if_unknown")]
        outputs = [_types.KpsType.Output("kps"), io.Image.Output("kps_images")]
        return NodeTexts("VExpressLoadKps", CATEGORY).schema(inputs, outputs)

    @classmethod
    def _path(cls, kps_file: str) -> str:
        return _comfy.folder_paths.get_annotated_filepath(kps_file)

    @classmethod
    def validate_inputs(cls, kps_file: str, **kwargs):
        if not _comfy.folder_paths.exists_annotated_filepath(kps_file):
            return f"kps file not found in the input folder: {kps_file}"
        return True

    @classmethod
    def fingerprint_inputs(cls, kps_file: str, **kwargs):
        digest = hashlib.sha256()
        with open(cls._path(kps_file), "rb") as handle:
            digest.update(handle.read())
        return digest.hexdigest()

    @classmethod
    def execute(cls, kps_file: str, fps_if_unknown: float) -> io.NodeOutput:
        import dataclasses

        from ..vexpress_model.inputs.kps import load_kps

        track = load_kps(cls._path(kps_file))
        if track.fps is None:
            track = dataclasses.replace(track, fps=float(fps_if_unknown))
        return io.NodeOutput(track, _preview(track))


class VExpressSaveKps(io.ComfyNode):
    """A track -> a kps file in the output folder, shown on the node as a captioned card."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = [
            _types.KpsType.Input("kps"),
            io.String.Input("filename_prefix", default="vexpress/kps"),
            io.Combo.Input("format", options=list(KPS_SAVE_FORMATS), default="npz"),
        ]
        outputs = []
        return NodeTexts("VExpressSaveKps", CATEGORY).schema(inputs, outputs, is_output_node=True)

    @classmethod
    def execute(cls, kps, filename_prefix: str, format: str) -> io.NodeOutput:
        from ..vexpress_model.inputs.kps import save_kps, save_kps_original

        folder_paths = _comfy.folder_paths
        full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), kps.width or 0, kps.height or 0
        )
        extension = "pth" if format.startswith("pth") else format
        file = f"{filename}_{counter:05}_.{extension}"
        path = os.path.join(full_folder, file)
        if extension == "pth":
            save_kps_original(path, kps)
        else:
            save_kps(path, kps)
        shown = f"{subfolder}/{file}" if subfolder else file
        text = f"{shown} ({kps.num_frames} frames)"
        # The stock frontend draws no text output on a node, but it draws images: the card shows the track's first
        # frame with the saved name under it. The text stays in the UI dict for API clients.
        card = ui.PreviewImage(_saved_card(kps, f"saved {text}"), cls=cls)
        return io.NodeOutput(ui={**card.as_dict(), "text": (text,)})


# -------------------------------------------------------------------------------------------------- retarget


class VExpressRetargetKps(io.ComfyNode):
    """Reference portrait (+ driving track) -> the kps track that drives the video, by strategy."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = [
            io.Image.Input("reference_image"),
            io.Combo.Input("strategy", options=list(RETARGET_STRATEGIES), default="fix_face"),
            _widgets.width(),
            _widgets.height(),
            io.Int.Input("frame_count", default=0, min=0, max=1_000_000),
            _widgets.fps("fps"),
            _widgets.compat(),
            _types.KpsType.Input("driving_kps", optional=True),
            _types.CropType.Input("crop", optional=True),
        ]
        outputs = [_types.KpsType.Output("kps"), io.Image.Output("kps_images")]
        return NodeTexts("VExpressRetargetKps", CATEGORY).schema(inputs, outputs)

    @classmethod
    def execute(cls, reference_image, strategy: str, width: int, height: int, frame_count: int, fps: float,
                compat: str, driving_kps=None, crop=None) -> io.NodeOutput:
        from ..vexpress_model.conditioning.face_crop import driving_track_for_crop
        from ..vexpress_model.conditioning.kps_sequence import kps_for_frames
        from ..vexpress_model.inputs.face_detection import reference_kps_from_image

        portrait = _types.image_to_uint8(reference_image)[0]
        reference_kps = reference_kps_from_image(portrait, width, height, compat, make_face_detector)
        if strategy != "fix_face":  # fix_face follows no driving motion
            driving_kps = driving_track_for_crop(driving_kps, crop, width, height)
        # frame_count 0 ("keep the driving track's length") is the library's None.
        track = kps_for_frames(reference_kps, driving_kps, strategy, frame_count or None, fps, width, height, compat)
        return io.NodeOutput(track, _preview(track))


NODES = [VExpressExtractKps, VExpressLoadKps, VExpressSaveKps, VExpressRetargetKps]
