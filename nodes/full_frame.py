"""Full-frame portraits: ``VExpressFaceCrop`` (any photo -> the face crop the model works on, plus where it lies)
and ``VExpressPasteBack`` (generated face frames -> the whole photo, animated). Both are thin wrappers over
``conditioning/face_crop.py`` and ``outputs/paste_back.py``, the same calls the ``--full_frame`` command line makes.
"""

from __future__ import annotations

from ..vexpress_model.options import CROP_BORDER_MODES, FACE_SELECTION_LABELS
from . import _types, _widgets
from ._comfy import io
from .kps import FACE_DETECTOR_TOOLTIP, make_face_detector

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
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..vexpress_model.conditioning.face_crop import DEFAULT_CROP_SCALE

        return io.Schema(
            node_id="VExpressFaceCrop",
            display_name="FaceCrop",
            category=CATEGORY,
            description=(
                "Cuts the face out of a photo of any size and shape as the square, face-centred crop V-Express was "
                "trained on (head and shoulders), resized to the generation size. Feed the crop to RetargetKps and "
                "the Sampler, and the crop description to PasteBack to put the animated face back into the photo."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The photo (the first image of a batch is used); any size."),
                _widgets.width(
                    tooltip="Width of the crop as generated; use the sampler's (the model is trained at 512).",
                ),
                _widgets.height(tooltip="Height of the crop as generated; use the sampler's."),
                io.Float.Input(
                    "crop_scale", default=DEFAULT_CROP_SCALE, min=1.0, max=8.0, step=0.05,
                    tooltip=(
                        f"Crop side in face sizes. {DEFAULT_CROP_SCALE} (default) frames head, hair and shoulders "
                        "like the training pictures; smaller zooms in on the face."
                    ),
                ),
                io.Combo.Input(
                    "border", options=list(CROP_BORDER_MODES), default="pad",
                    tooltip=(
                        "A crop reaching past the photo's edge: pad (repeat the edge pixels; the face stays centred) "
                        "or shift (move the square back inside the photo)."
                    ),
                ),
                io.Combo.Input(
                    "face", options=PHOTO_FACE_LABELS, default="largest",
                    tooltip="Which face to crop when the photo shows several.",
                ),
                _widgets.face_detector(tooltip=FACE_DETECTOR_TOOLTIP),
            ],
            outputs=[
                io.Image.Output("face_image", display_name="face_image",
                                tooltip="The face crop at width x height, for RetargetKps and the Sampler."),
                _types.CropType.Output(
                    "crop", display_name="crop",
                    tooltip="Where the crop lies in the photo, for PasteBack (with the same photo).",
                ),
            ],
        )

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
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VExpressPasteBack",
            display_name="PasteBack",
            category=CATEGORY,
            description=(
                "Puts generated face frames back into the full photo they were cropped from (FaceCrop): each frame "
                "is resized to the crop, colour-matched if asked, and blended in with a soft edge. Everything "
                "outside the crop stays the untouched photo. Returns every full frame as one IMAGE batch; "
                "for long clips connect the photo and the crop to SaveVideo instead, which pastes while it "
                "writes and holds only one chunk of full frames in memory."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The generated frames (the Sampler's images)."),
                io.Image.Input("original_image", tooltip="The photo FaceCrop cut the face from (the same image)."),
                _types.CropType.Input("crop", tooltip="FaceCrop's crop output."),
                _widgets.feather(tooltip=_widgets.FEATHER_TOOLTIP),
                _widgets.color_match(tooltip=_widgets.COLOR_MATCH_TOOLTIP),
                _widgets.max_side(tooltip=_widgets.MAX_SIDE_TOOLTIP),
            ],
            outputs=[
                io.Image.Output(
                    "full_frames", display_name="full_frames",
                    tooltip=(
                        "The full frames (even width and height), all in memory; for long clips let SaveVideo "
                        "paste (its full_image and crop inputs)."
                    ),
                ),
            ],
        )

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
