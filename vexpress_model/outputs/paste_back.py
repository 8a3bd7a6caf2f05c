"""Full-frame portraits, second half: generated face crops pasted back into the full-resolution reference.

Per generated frame (uint8 [h, w, 3] at the generation size):

1. **resize** to the crop's size in source pixels (OpenCV: Lanczos when enlarging, area when shrinking);
2. **colour match** (optional): in CIE Lab, each channel's mean and standard deviation inside the crop are moved
   to the reference crop's (Reinhard's transfer). ``color_match="clip"`` (default) measures the correction once,
   on the first frame, and applies it to every frame (a steady correction, no flicker); ``"frame"`` measures
   every frame (follows drift, may flicker); ``"off"`` keeps the generated colours;
3. **blend** into the reference image with a feathered mask: 1 inside the crop, falling to 0 at the crop edge
   over ``feather`` x the crop side (a smoothstep ramp, so the blend has no kink). Crop edges that lie on or past
   the image border get no ramp. Every pixel outside the crop square is the reference pixel, untouched.

Output size: the reference image's size; with ``max_side`` the reference (and the crop) are first scaled down so
that the longer side is at most ``max_side``; an odd width or height loses its last column or row (H.264
``yuv420p`` needs even sizes), so the output is always even-sized.

:class:`PasteBack` holds the resized reference, the mask and the colour correction; :meth:`PasteBack.paste` works
on any chunk of frames, and :func:`paste_back_chunks` streams chunks (from the sampler or an IMAGE batch) so a
long clip at 1080p never holds more than one chunk of full frames in memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np

from ..conditioning.face_crop import FaceCrop
from ..errors import InputError
from ..options import COLOR_MATCH_MODES, MIN_MAX_SIDE

logger = logging.getLogger("vexpress.outputs")

ColorMatch = Literal["off", "frame", "clip"]
DEFAULT_COLOR_MATCH: ColorMatch = "clip"
DEFAULT_FEATHER = 0.1
MAX_FEATHER = 0.5


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int, float]:
    """(width, height, scale) of the pasted video: at most ``max_side`` on the longer side, even sizes."""
    scale = 1.0
    if max_side:
        check_paste_settings(DEFAULT_FEATHER, DEFAULT_COLOR_MATCH, max_side)
        scale = min(1.0, max_side / max(width, height))
    scaled_width = max(2, int(round(width * scale)))
    scaled_height = max(2, int(round(height * scale)))
    return scaled_width - scaled_width % 2, scaled_height - scaled_height % 2, scale


def check_paste_settings(feather: float, color_match: str, max_side: int | None) -> None:
    """InputError for a feather outside [0, 0.5] (or not finite), an unknown colour mode or a max side below
    ``MIN_MAX_SIDE``."""
    if not (math.isfinite(feather) and 0.0 <= feather <= MAX_FEATHER):
        raise InputError(f"feather must be between 0 and {MAX_FEATHER} (a fraction of the crop side), got {feather}")
    if color_match not in COLOR_MATCH_MODES:
        raise InputError(f"color_match must be one of {', '.join(COLOR_MATCH_MODES)}, got {color_match!r}")
    if max_side is not None and max_side and max_side < MIN_MAX_SIDE:
        raise InputError(f"the maximum output side (max_side) must be 0 (keep the photo's size) or at least "
                         f"{MIN_MAX_SIDE} pixels, got {max_side}")


def feather_mask(crop: FaceCrop, feather: float) -> np.ndarray:
    """float32 [size, size] blend weights of the generated crop: 1 inside, a smoothstep ramp to 0 at the edges
    that lie inside the image, over ``feather`` x ``size`` pixels."""
    check_paste_settings(feather, DEFAULT_COLOR_MATCH, None)
    ramp = feather * crop.size
    centres = np.arange(crop.size, dtype=np.float64) + 0.5

    def profile(start_inside: bool, end_inside: bool) -> np.ndarray:
        weight = np.ones(crop.size)
        if ramp > 0:
            if start_inside:
                weight = np.minimum(weight, centres / ramp)
            if end_inside:
                weight = np.minimum(weight, (crop.size - centres) / ramp)
        weight = np.clip(weight, 0.0, 1.0)
        return weight * weight * (3.0 - 2.0 * weight)

    columns = profile(crop.left > 0, crop.right < crop.source_width)
    rows = profile(crop.top > 0, crop.bottom < crop.source_height)
    return np.outer(rows, columns).astype(np.float32)


def _lab_stats(image_lab: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and standard deviation per Lab channel."""
    total = float(weights.sum())
    pixels = image_lab.reshape(-1, 3).astype(np.float64)
    w = weights.reshape(-1, 1).astype(np.float64)
    mean = (pixels * w).sum(axis=0) / total
    std = np.sqrt(((pixels - mean) ** 2 * w).sum(axis=0) / total)
    return mean, std


class PasteBack:
    """Pastes generated crops back into one reference image (see the module docstring)."""

    def __init__(
        self,
        reference_image: np.ndarray,
        crop: FaceCrop,
        *,
        feather: float = DEFAULT_FEATHER,
        color_match: ColorMatch = DEFAULT_COLOR_MATCH,
        max_side: int | None = None,
    ) -> None:
        import cv2

        image = np.asarray(reference_image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"the reference image must be RGB uint8 [H, W, 3], got {image.dtype} {image.shape}")
        if image.shape[:2] != (crop.source_height, crop.source_width):
            raise InputError(
                f"the crop belongs to a {crop.source_width}x{crop.source_height} image, but the image to paste into "
                f"is {image.shape[1]}x{image.shape[0]}; paste into the image the crop was made from"
            )
        check_paste_settings(feather, color_match, max_side)
        width, height, scale = output_size(crop.source_width, crop.source_height, max_side)
        if scale != 1.0:
            image = cv2.resize(image, (int(round(crop.source_width * scale)), int(round(crop.source_height * scale))),
                               interpolation=cv2.INTER_AREA)
            crop = crop.scaled(scale)
        self.width, self.height = width, height
        self.crop = crop
        self._background = np.ascontiguousarray(image[:height, :width])
        self._color_match = color_match
        mask = feather_mask(crop, feather)
        # The part of the crop square that lies inside the (even-sized) output.
        self._x0, self._y0 = max(crop.left, 0), max(crop.top, 0)
        self._x1, self._y1 = min(crop.right, width), min(crop.bottom, height)
        if self._x0 >= self._x1 or self._y0 >= self._y1:
            raise InputError("the face crop lies outside the image; nothing would be pasted")
        self._slice = (slice(self._y0 - crop.top, self._y1 - crop.top),
                       slice(self._x0 - crop.left, self._x1 - crop.left))
        self._mask = np.ascontiguousarray(mask[self._slice])
        self._reference_patch = self._background[self._y0 : self._y1, self._x0 : self._x1]
        self._reference_lab = _lab_stats(cv2.cvtColor(self._reference_patch, cv2.COLOR_RGB2LAB), self._mask)
        self._clip_correction: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the pasted frames."""
        return self.width, self.height

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        size = self.crop.size
        interpolation = cv2.INTER_AREA if size < max(frame.shape[:2]) else cv2.INTER_LANCZOS4
        resized = cv2.resize(np.ascontiguousarray(frame), (size, size), interpolation=interpolation)
        return resized[self._slice]

    def _correction(self, patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        mean, std = _lab_stats(cv2.cvtColor(patch, cv2.COLOR_RGB2LAB), self._mask)
        target_mean, target_std = self._reference_lab
        gain = np.clip(target_std / np.maximum(std, 1e-3), 0.5, 2.0)
        return gain, target_mean - mean * gain

    def _match_colours(self, patch: np.ndarray) -> np.ndarray:
        import cv2

        if self._color_match == "off":
            return patch
        if self._color_match == "frame":
            gain, offset = self._correction(patch)
        else:
            if self._clip_correction is None:
                self._clip_correction = self._correction(patch)
            gain, offset = self._clip_correction
        lab = cv2.cvtColor(patch, cv2.COLOR_RGB2LAB).astype(np.float32)
        lab = np.clip(np.rint(lab * gain.astype(np.float32) + offset.astype(np.float32)), 0, 255).astype(np.uint8)
        return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)

    def paste_frame(self, frame: np.ndarray) -> np.ndarray:
        """One generated frame (uint8 [h, w, 3]) -> one full frame (uint8 [height, width, 3])."""
        import cv2

        patch = self._match_colours(self._resize(frame))
        blended = cv2.blendLinear(patch.astype(np.float32), self._reference_patch.astype(np.float32),
                                  self._mask, 1.0 - self._mask)
        full = self._background.copy()
        full[self._y0 : self._y1, self._x0 : self._x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return full

    def paste(self, frames: np.ndarray) -> np.ndarray:
        """Generated frames uint8 [n, h, w, 3] (or one [h, w, 3]) -> full frames uint8 [n, height, width, 3]."""
        array = np.asarray(frames)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise InputError(f"generated frames must be uint8 [n, h, w, 3], got {array.dtype} {array.shape}")
        out = np.empty((len(array), self.height, self.width, 3), np.uint8)
        for index, frame in enumerate(array):
            out[index] = self.paste_frame(frame)
        return out


def paste_back_chunks(chunks: Iterable[np.ndarray], paster: PasteBack, chunk_frames: int = 16) -> Iterator[np.ndarray]:
    """Full frames for a stream of generated chunks, at most ``chunk_frames`` full frames at a time."""
    for chunk in chunks:
        array = np.asarray(chunk)
        if array.ndim == 3:
            array = array[None]
        for start in range(0, len(array), chunk_frames):
            yield paster.paste(array[start : start + chunk_frames])
