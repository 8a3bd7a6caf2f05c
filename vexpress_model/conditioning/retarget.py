"""Retargeting a driving kps sequence onto the reference face (docs/spec.md §4.7).

Strategies: ``fix_face`` (the reference kps in every frame), ``no_retarget`` (the driving kps as they are),
``offset_retarget`` (the reference face, moved as the driving nose moves) and ``naive_retarget`` (the driving
face, resized to the reference face and placed on it).

Both scaled strategies first pick a driving frame *S* whose pose resembles the reference (by the ratio of
the eye-to-nose distances) and measure two scales against it: ``scale_w`` = reference eye distance / S's eye
distance and ``scale_h`` = reference nose-to-eye-line distance / S's.

``compat="original"`` reproduces the original code exactly, bugs included: the frame test compares
``|ratio - ratio_ref|`` with the *previous ratio* instead of the best difference, which in practice selects
the last frame; x is multiplied by ``scale_w`` and y by ``scale_h`` about the image origin; and
``offset_retarget`` moves the reference by **minus half** the driving nose displacement. Computations keep
the original's float32 arrays and Python floats.

``compat="fixed"`` (default) corrects the math:

* S is the frame with the smallest ``|ratio - ratio_ref|`` (the first one on ties);
* the two scales act in S's face frame -- ``scale_w`` along S's eye line, ``scale_h`` across it -- on
  displacements measured from the driving face (its first-frame nose), not from the image origin. For an
  upright face this is exactly the original's x/y scaling (whose origin cancels out after its shift); for a
  tilted driving face the eye distance is no longer stretched by the nose scale and vice versa;
* ``naive_retarget``: ``out_i = R_nose + M (T_i - T_0,nose)``, so the first frame's nose lands on the
  reference nose, as in the original;
* ``offset_retarget``: ``out_i = R + offset_gain * M (T_i,nose - T_0,nose)``: the reference face moves in
  the same direction as the driving nose, by the full displacement scaled to the reference face
  (``offset_gain=0.5`` halves it like the original, without the sign flip).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..options import RETARGET_STRATEGIES, check_choice, check_compat

_EPS = 1e-6


def _as_kps(array: np.ndarray, name: str, sequence: bool) -> np.ndarray:
    value = np.asarray(array, dtype=np.float32)
    good = value.shape[-2:] == (3, 2) and value.ndim == (3 if sequence else 2) and value.size > 0
    if not good:
        raise InputError(f"{name} must have shape {'(T, 3, 2)' if sequence else '(3, 2)'}, got {tuple(value.shape)}")
    return value


# --------------------------------------------------------------------------------- original (compat) math


def _original_distance(x1: float, y1: float, x2: float, y2: float) -> float:
    return math.sqrt((x1 - x2) ** 2 + (y1 - y2) ** 2)


def _original_ratio(kps: np.ndarray) -> float:
    left = _original_distance(kps[0][0], kps[0][1], kps[2][0], kps[2][1])
    right = _original_distance(kps[1][0], kps[1][1], kps[2][0], kps[2][1])
    return left / (right + 1e-6)


def _original_point_to_segment(point: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.floating:
    line = end - start
    norm = np.sqrt(np.sum(line**2))
    t = np.dot(line / norm, (point - start) * 1.0 / norm)
    t = 0.0 if t < 0.0 else (1.0 if t > 1.0 else t)
    nearest = start + t * line
    return np.sqrt(np.sum((point - nearest) ** 2))


def _original_face_size(kps: np.ndarray) -> tuple[float, np.floating]:
    eyes = math.sqrt((kps[0, 0] - kps[1, 0]) ** 2 + (kps[0, 1] - kps[1, 1]) ** 2)
    return eyes, _original_point_to_segment(kps[2, :], kps[0, :], kps[1, :])


def _original_retarget(reference: np.ndarray, driving: np.ndarray, only_offset: bool) -> np.ndarray:
    reference_ratio = _original_ratio(reference)
    threshold, selected = 10000.0, None
    for index, frame in enumerate(driving):
        ratio = _original_ratio(frame)
        if math.fabs(ratio - reference_ratio) < threshold:
            selected, threshold = index, ratio  # the original's bug: the ratio, not the difference
    if selected is None:
        raise InputError("retargeting found no usable driving frame (the kps ratios are not finite)")
    reference_eyes, reference_nose = _original_face_size(reference)
    driving_eyes, driving_nose = _original_face_size(driving[selected])
    scale_w, scale_h = reference_eyes / driving_eyes, reference_nose / driving_nose
    scaled = np.array(driving)
    scaled[:, :, 0] *= scale_w
    scaled[:, :, 1] *= scale_h
    if only_offset:
        nose_offset = (scaled[:, 2, :] - scaled[0, 2, :])[:, np.newaxis, :]
        out = np.tile(reference, (driving.shape[0], 1, 1))
        out[:, :, :] -= nose_offset / 2.0
        return out
    scaled[:, :, 0] -= scaled[0, 2, 0] - reference[2][0]
    scaled[:, :, 1] -= scaled[0, 2, 1] - reference[2][1]
    return scaled


# ------------------------------------------------------------------------------------------- fixed math


def _ratios(kps: np.ndarray) -> np.ndarray:
    """|eye0 - nose| / (|eye1 - nose| + 1e-6) for [..., 3, 2] kps, in float64."""
    kps = kps.astype(np.float64)
    left = np.linalg.norm(kps[..., 0, :] - kps[..., 2, :], axis=-1)
    right = np.linalg.norm(kps[..., 1, :] - kps[..., 2, :], axis=-1)
    return left / (right + 1e-6)


def _face_frame(kps: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Eye distance, nose-to-eye-segment distance and the unit eye direction of one face (float64)."""
    a, b, c = kps.astype(np.float64)
    line = b - a
    eyes = float(np.linalg.norm(line))
    if eyes < _EPS:
        return eyes, float(np.linalg.norm(c - a)), np.array([1.0, 0.0])
    t = float(np.clip(np.dot(c - a, line) / eyes**2, 0.0, 1.0))
    return eyes, float(np.linalg.norm(c - (a + t * line))), line / eyes


def _scale_matrix(reference: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """2x2 scaling by (scale_w along the eye line, scale_h across it) in the selected frame's face axes."""
    reference_eyes, reference_nose, _ = _face_frame(reference)
    driving_eyes, driving_nose, direction = _face_frame(selected)
    if driving_eyes < _EPS and driving_nose < _EPS:
        raise InputError("the driving kps frame chosen for retargeting has all three points on top of each other")
    scale_w = reference_eyes / driving_eyes if driving_eyes >= _EPS else reference_nose / driving_nose
    scale_h = reference_nose / driving_nose if driving_nose >= _EPS else scale_w
    across = np.array([-direction[1], direction[0]])
    return scale_w * np.outer(direction, direction) + scale_h * np.outer(across, across)


def select_matching_frame(reference: np.ndarray, driving: np.ndarray) -> int:
    """Index of the driving frame whose eye-nose distance ratio is closest to the reference's (fixed rule)."""
    difference = np.abs(_ratios(driving) - _ratios(reference))
    if not np.isfinite(difference).any():
        raise InputError("retargeting found no usable driving frame (the kps ratios are not finite)")
    return int(np.nanargmin(difference))


def _fixed_retarget(reference: np.ndarray, driving: np.ndarray, only_offset: bool, offset_gain: float) -> np.ndarray:
    matrix = _scale_matrix(reference, driving[select_matching_frame(reference, driving)])
    drive = driving.astype(np.float64)
    if only_offset:
        motion = (drive[:, 2, :] - drive[0, 2, :]) @ matrix.T
        out = reference.astype(np.float64)[None] + offset_gain * motion[:, None, :]
    else:
        out = reference.astype(np.float64)[2] + (drive - drive[0, 2, :]) @ matrix.T
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------------------ public


def fix_face(reference_kps: np.ndarray, num_frames: int) -> np.ndarray:
    """The reference kps for every frame: float32 [num_frames, 3, 2] (the ``fix_face`` strategy)."""
    reference = np.asarray(reference_kps, dtype=np.float32)
    if reference.shape != (3, 2):
        raise InputError(f"reference_kps must have shape (3, 2), got {reference.shape}")
    if num_frames <= 0:
        raise InputError(f"num_frames must be positive, got {num_frames}")
    return np.ascontiguousarray(np.broadcast_to(reference, (int(num_frames), 3, 2)))


def retarget_kps(
    reference_kps: np.ndarray,
    driving: np.ndarray | None,
    strategy: str,
    compat: str = "fixed",
    *,
    num_frames: int | None = None,
    offset_gain: float = 1.0,
) -> np.ndarray:
    """Kps for every output frame, float32 [T, 3, 2], from the reference kps [3, 2] and driving kps [T, 3, 2].

    ``fix_face`` needs no driving kps (T = ``num_frames``, else len(driving)); ``offset_gain`` applies to
    ``offset_retarget`` in fixed mode only. See the module docstring for the math.
    """
    check_choice(strategy, RETARGET_STRATEGIES, "retarget strategy")
    check_compat(compat)
    reference = _as_kps(reference_kps, "reference kps", False)
    if strategy == "fix_face":
        count = num_frames if num_frames is not None else (None if driving is None else len(driving))
        if count is None:
            raise InputError("fix_face needs num_frames (or a driving sequence to take the length from)")
        return fix_face(reference, count)
    if driving is None:
        raise InputError(f"retarget strategy {strategy} needs driving kps: pass a kps file (--kps_path)")
    sequence = _as_kps(driving, "driving kps", True)
    if strategy == "no_retarget":
        return sequence.copy()
    only_offset = strategy == "offset_retarget"
    if compat == "original":
        return _original_retarget(reference, sequence, only_offset)
    return _fixed_retarget(reference, sequence, only_offset, offset_gain)
