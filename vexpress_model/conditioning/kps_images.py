"""V-Kps images: the three keypoints drawn the way V-Express was trained (SPEC §4.8).

The figure is two filled ellipses ("limbs") from each eye to the nose, in 60 % of the eye's colour, with
filled discs of radius 4 on top: eye on the image left red (255, 0, 0), eye on the image right green
(0, 255, 0), nose blue (0, 0, 255), channel 0 first (RGB). Every coordinate, the limb centre, half-length
and angle are truncated to integers before drawing, as the original does; the output is pixel-identical
to the original's ``draw_kps_image``.
"""

from __future__ import annotations

import math

import numpy as np

POINT_COLOURS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
LIMBS: tuple[tuple[int, int], ...] = ((0, 2), (1, 2))
LIMB_COLOUR_FACTOR = 0.6
LIMB_HALF_WIDTH = 4
POINT_RADIUS = 4


def _check_kps(kps: np.ndarray, leading: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(kps)
    if array.shape[len(leading) :] != (3, 2) or (leading and array.shape[: len(leading)] != leading):
        raise ValueError(f"kps must have shape {(*leading, 3, 2)}, got {array.shape}")
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
        raise ValueError(f"kps_sequence must have shape (T, 3, 2), got {sequence.shape}")
    _check_kps(sequence, (sequence.shape[0],))
    images = np.zeros((sequence.shape[0], int(height), int(width), 3), dtype=np.uint8)
    for index, points in enumerate(sequence):
        images[index] = draw_kps_image(height, width, points)
    return images
