"""The choices a user picks from, defined once for the library, the command lines and the ComfyUI nodes."""

from __future__ import annotations

from typing import Literal

from .errors import InputError

Compat = Literal["fixed", "original"]
COMPAT_MODES: tuple[str, ...] = ("fixed", "original")
"""``fixed`` (default): corrected numerics; ``original``: the original implementation, bugs included (parity)."""

DTYPES: tuple[str, ...] = ("auto", "fp16", "bf16", "fp32")
"""Run precision; ``auto`` picks per device (fp16 on CUDA, fp32 on the CPU)."""

MEDIAN_FILTER_MODES: tuple[str, ...] = ("auto", "on", "off")
"""The original's 3x3x3 median filter after decoding; ``auto``: on in compat "original" only."""

KPS_FORMATS: tuple[str, ...] = ("auto", "original", "npz", "json")
"""Kps file formats; ``auto`` picks by the file name's extension."""

FaceSelection = Literal["largest", "score", "nearest"]
FACE_SELECTIONS: tuple[str, ...] = ("largest", "score", "nearest")
"""Which face to follow when a frame shows several: the largest box, the detector's most confident one, or the one
nearest the previous frame's face (the largest in the first frame)."""

FACE_SELECTION_LABELS: dict[str, str] = {"largest": "largest", "most_confident": "score", "nearest_previous": "nearest"}
"""The nodes' widget labels for :data:`FACE_SELECTIONS`."""

FACE_DETECTORS: tuple[str, ...] = ("auto", "insightface", "mediapipe")
"""Face detection backends; ``auto``: insightface where its model is present, else MediaPipe."""

CROP_BORDER_MODES: tuple[str, ...] = ("pad", "shift")
"""Full frame: a face crop past the image edge pads (repeats the edge) or shifts inside the image."""

COLOR_MATCH_MODES: tuple[str, ...] = ("clip", "frame", "off")
"""Full frame: the pasted face's colours matched to the photo once per clip, per frame, or not at all."""

RETARGET_STRATEGIES: tuple[str, ...] = ("fix_face", "no_retarget", "offset_retarget", "naive_retarget")
"""How the driving kps are fitted to the reference face (docs/spec.md §4.7)."""

STRATEGIES_WITH_DRIVING_KPS: tuple[str, ...] = tuple(s for s in RETARGET_STRATEGIES if s != "fix_face")
"""Every strategy but fix_face follows a driving kps track."""

TEST_STAGES: tuple[str, ...] = ("stage_1", "stage_2", "stage_3")
"""The original's ``--test_stage``: stage_1 turns the motion modules and the audio attention off."""

REFERENCE_KPS_SPACES: tuple[str, ...] = ("output", "image")
"""Pixel space of a --reference_kps_path file: the output frame (width x height) or the reference image's own."""

MAX_FPS = 240.0
"""Highest output / track frame rate any front end accepts."""

MIN_FPS = 1.0
"""Lowest output frame rate (the nodes' fps widgets start here): below it one frame would last seconds."""

MIN_MAX_SIDE = 64
"""Smallest longer side a full-frame video may be scaled down to (--max_side; 0 keeps the photo's size): below it the
pasted face is a few pixels wide and the video a thumbnail nobody asked for."""


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``choices``, else an InputError naming ``what`` and the choices."""
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


def check_compat(compat: str) -> Compat:
    """``compat`` if it is "fixed" or "original", else an InputError."""
    return check_choice(compat, COMPAT_MODES, "compat")  # type: ignore[return-value]
