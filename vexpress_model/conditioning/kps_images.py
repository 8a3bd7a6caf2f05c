"""V-Kps images: the three keypoints drawn the way V-Express was trained (docs/spec.md §4.8).

The figure is two filled ellipses ("limbs") from each eye to the nose, in 60 % of the eye's colour, with
filled discs of radius 4 on top: eye on the image left red (255, 0, 0), eye on the image right green
(0, 255, 0), nose blue (0, 0, 255), channel 0 first (RGB). Every coordinate, the limb centre, half-length
and angle are truncated to integers before drawing, as the original does; the output is pixel-identical
to the original's ``draw_kps_image``.

:func:`kps_image_source` is what the pipeline's kps stage reads: one image for a still face, else frames drawn on
demand, so that a long clip's kps images never exist all at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..errors import InputError

KpsImageSource = Callable[[int, int], np.ndarray]
"""``source(start, stop)`` -> uint8 kps images ``[stop - start, H, W, 3]`` of those frames (the pipeline's
``encode_kps`` accepts it; :func:`as_uint8_frames` checks what it gives)."""

POINT_COLOURS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
LIMBS: tuple[tuple[int, int], ...] = ((0, 2), (1, 2))
LIMB_COLOUR_FACTOR = 0.6
LIMB_HALF_WIDTH = 4
POINT_RADIUS = 4


def _check_kps(kps: np.ndarray, leading: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(kps)
    if array.shape[len(leading) :] != (3, 2) or (leading and array.shape[: len(leading)] != leading):
        raise InputError(f"kps must have shape {(*leading, 3, 2)}, got {array.shape}")
    return array


def draw_kps_image(height: int, width: int, kps: np.ndarray) -> np.ndarray:
    """Draw one V-Kps image: uint8 RGB [height, width, 3] from kps [3, 2] (x, y pixels)."""
    import cv2

    points = _check_kps(kps, ()).astype(np.float32)  # the original draws from float32 coordinates
    canvas = np.zeros((int(height), int(width), 3), dtype=np.uint8)
    for first, second in LIMBS:
        x0, y0 = points[first]
        x1, y1 = points[second]
        length = ((x0 - x1) ** 2 + (y0 - y1) ** 2) ** 0.5
        angle = int(math.degrees(math.atan2(y0 - y1, x0 - x1)))
        centre = (int(np.mean([x0, x1])), int(np.mean([y0, y1])))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), LIMB_HALF_WIDTH), angle, 0, 360, 1)
        colour = [int(float(c) * LIMB_COLOUR_FACTOR) for c in POINT_COLOURS[first]]
        cv2.fillConvexPoly(canvas, polygon, colour)
    for (x, y), colour in zip(points, POINT_COLOURS):
        cv2.circle(canvas, (int(x), int(y)), POINT_RADIUS, colour, -1)
    return canvas


def draw_kps_images(height: int, width: int, kps_sequence: np.ndarray) -> np.ndarray:
    """Draw a V-Kps image per frame: uint8 [T, height, width, 3] from kps [T, 3, 2]."""
    sequence = np.asarray(kps_sequence)
    if sequence.ndim != 3:
        raise InputError(f"kps_sequence must have shape (T, 3, 2), got {sequence.shape}")
    _check_kps(sequence, (sequence.shape[0],))
    images = np.zeros((sequence.shape[0], int(height), int(width), 3), dtype=np.uint8)
    for index, points in enumerate(sequence):
        images[index] = draw_kps_image(height, width, points)
    return images


def kps_image_source(kps_sequence: np.ndarray, width: int, height: int) -> np.ndarray | KpsImageSource:
    """The kps images of a sequence [T, 3, 2] as the pipeline's ``encode_kps`` takes them.

    A still face (every frame equal: ``fix_face``, or a driving track that never moves) gives one uint8 image
    [H, W, 3], which the pipeline broadcasts over the clip (the guider then runs once); any other sequence gives a
    callable ``(start, stop) -> uint8 [stop - start, H, W, 3]`` that draws those frames when the guider needs them.
    """
    sequence = np.asarray(kps_sequence)
    if sequence.ndim != 3 or sequence.shape[0] == 0:
        raise InputError(f"kps_sequence must have shape (T > 0, 3, 2), got {sequence.shape}")
    _check_kps(sequence, (sequence.shape[0],))
    if bool((sequence == sequence[:1]).all()):
        return draw_kps_image(height, width, sequence[0])
    return lambda start, stop: draw_kps_images(height, width, sequence[start:stop])


def draw_kps_preview(
    kps_sequence: np.ndarray,
    width: int | None,
    height: int | None,
    max_side: int = 256,
    *,
    long_sequence: int = 600,
) -> np.ndarray:
    """The sequence [T, 3, 2] drawn as V-Kps images for a person to look at: uint8 [T, h, w, 3].

    The frame (``width`` x ``height``, 512 x 512 when unknown) is scaled down to at most ``max_side`` pixels on its
    long side (never up, never below 8 pixels), the points with it; sequences longer than ``long_sequence`` frames
    are drawn at half that size, so a long track's preview stays light. Not what the model sees (that is
    :func:`draw_kps_images` at the output size).
    """
    sequence = np.asarray(kps_sequence, dtype=np.float32)
    if sequence.ndim != 3:
        raise InputError(f"kps_sequence must have shape (T, 3, 2), got {sequence.shape}")
    width = width or 512
    height = height or 512
    side = max_side if sequence.shape[0] <= long_sequence else max_side // 2
    scale = min(1.0, side / max(width, height))
    out_w, out_h = max(8, round(width * scale)), max(8, round(height * scale))
    points = sequence * np.array([out_w / width, out_h / height], dtype=np.float32)
    return draw_kps_images(out_h, out_w, points)


def as_uint8_frames(images: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """uint8 RGB ``[H, W, 3]`` or ``[T, H, W, 3]`` as a ``[T, H, W, 3]`` tensor; anything else is an InputError."""
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8 or tensor.ndim not in (3, 4) or tensor.shape[-1] != 3:
        raise InputError(
            f"{what} must be uint8 RGB [H, W, 3] or [T, H, W, 3], got {tuple(tensor.shape)} {tensor.dtype}"
        )
    return tensor if tensor.ndim == 4 else tensor.unsqueeze(0)


def all_frames_equal(frames: torch.Tensor, chunk: int = 16) -> bool:
    """Whether every frame equals the first; chunked with an early exit, so a long clip whose frames differ costs
    one comparison and never a full-size boolean copy."""
    first = frames[:1]
    for start in range(1, frames.shape[0], chunk):
        block = frames[start : start + chunk]
        if not torch.equal(block, first.expand_as(block)):
            return False
    return True


def kps_image_reader(
    kps_images: np.ndarray | torch.Tensor | KpsImageSource, num_frames: int | None
) -> tuple[Callable[[int, int], torch.Tensor], int, int]:
    """What the pipeline's kps stage reads: ``(read, count, total)`` -- ``read(start, stop)`` gives uint8 kps images
    ``[n, H, W, 3]`` of the ``count`` distinct frames (1 for a still face: one image, or a sequence whose frames are
    all equal) of a clip of ``total`` frames. ``kps_images``: an array ``[T, H, W, 3]`` / ``[H, W, 3]``, or a
    :data:`KpsImageSource` (then ``num_frames`` is needed)."""
    if callable(kps_images):
        if num_frames is None:
            raise InputError("num_frames is needed when kps images come from a callable")
        source = kps_images
        total = count = int(num_frames)

        def read(start: int, stop: int) -> torch.Tensor:
            return as_uint8_frames(source(start, stop), "kps images")

    else:
        frames = as_uint8_frames(kps_images, "kps images")
        total = int(num_frames) if num_frames is not None else int(frames.shape[0])
        if frames.shape[0] not in (1, total):
            raise InputError(f"{frames.shape[0]} kps images for {total} frames")
        if frames.shape[0] > 1 and all_frames_equal(frames):
            frames = frames[:1]
        count = int(frames.shape[0])

        def read(start: int, stop: int) -> torch.Tensor:
            return frames[start:stop]

    return read, count, total
