"""Full-frame portraits: ``VExpressFaceCrop`` (any photo -> the face crop the model works on, plus where it lies)
and ``VExpressPasteBack`` (generated face frames -> the whole photo, animated). Both are thin wrappers over
``conditioning/face_crop.py`` and ``outputs/paste_back.py``, the same calls the ``--full_frame`` command line makes.
"""

from __future__ import annotations

from ..vexpress_model.options import CROP_BORDER_MODES, FACE_SELECTION_LABELS
from . import _types, _widgets
from ._comfy import io
from ._texts import NodeTexts
from .kps import make_face_detector

CATEGORY = "V-Express/full frame"
# One photo has no previous frame: its face is the largest or the most confident one.
PHOTO_FACE_LABELS = [label for label, rule in FACE_SELECTION_LABELS.items() if rule != "nearest"]
PASTE_CHUNK_FRAMES = 16  # full frames in memory at a time (16 x 1080p x 3 bytes is about 100 MB)


def make_paster(original_image, crop, feather: float, color_match: str, max_side: int):
    """The library's ``PasteBack`` for an IMAGE photo and FaceCrop's crop (max_side 0: the photo's size); shared by
    PasteBack and SaveVideo's streaming paste-back."""
    from ..vexpress_model.outputs.paste_back import PasteBack

    photo = _types.image_to_uint8(original_image)[0]
    return PasteBack(photo, crop, feather=float(feather), color_match=color_match, max_side=int(max_side) or None)


class VExpressFaceCrop(io.ComfyNode):
    """Any photo -> the square face crop the model works on, plus where it lies in the photo."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..vexpress_model.conditioning.face_crop import DEFAULT_CROP_SCALE

        inputs = [
            io.Image.Input("image"),
            _widgets.width(),
            _widgets.height(),
            io.Float.Input("crop_scale", default=DEFAULT_CROP_SCALE, min=1.0, max=8.0, step=0.05),
            io.Combo.Input("border", options=list(CROP_BORDER_MODES), default="pad"),
            io.Combo.Input("face", options=PHOTO_FACE_LABELS, default="largest"),
            _widgets.face_detector(),
        ]
        outputs = [io.Image.Output("face_image"), _types.CropType.Output("crop")]
        return NodeTexts("VExpressFaceCrop", CATEGORY).schema(inputs, outputs)

    @classmethod
    def execute(cls, image, width: int, height: int, crop_scale: float, border: str, face: str,
                face_detector: str) -> io.NodeOutput:
        from ..vexpress_model.conditioning.face_crop import crop_reference

        photo = _types.image_to_uint8(image)[0]
        with make_face_detector(face_detector) as detector:
            cropped = crop_reference(photo, width, height, detector=detector, crop_scale=float(crop_scale),
                                     border=border, select=FACE_SELECTION_LABELS[face], name="image")
        return io.NodeOutput(_types.uint8_to_image(cropped.image), cropped.crop)


class VExpressPasteBack(io.ComfyNode):
    """Generated face frames + the photo + the crop -> the whole photo animated, as IMAGE frames."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = [
            io.Image.Input("images"),
            io.Image.Input("original_image"),
            _types.CropType.Input("crop"),
            _widgets.feather(),
            _widgets.color_match(),
            _widgets.max_side(),
        ]
        outputs = [io.Image.Output("full_frames")]
        return NodeTexts("VExpressPasteBack", CATEGORY).schema(inputs, outputs)

    @classmethod
    def execute(cls, images, original_image, crop, feather: float, color_match: str, max_side: int) -> io.NodeOutput:
        import torch

        paster = make_paster(original_image, crop, feather, color_match, max_side)
        width, height = paster.size
        out = torch.empty((images.shape[0], height, width, 3), dtype=torch.float32)
        for start in range(0, images.shape[0], PASTE_CHUNK_FRAMES):
            chunk = _types.image_to_uint8(images[start : start + PASTE_CHUNK_FRAMES])
            out[start : start + len(chunk)] = _types.uint8_to_image(paster.paste(chunk))
        return io.NodeOutput(out)


NODES = [VExpressFaceCrop, VExpressPasteBack]
