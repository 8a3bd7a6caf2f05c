"""Retarget strategies: the original's math (bugs included) in compat mode, the corrected math by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vexpress_model.conditioning.kps_resample import resample_kps_track
from vexpress_model.conditioning.retarget import retarget_kps, select_matching_frame
from vexpress_model.errors import InputError
from vexpress_model.inputs.kps import load_kps, load_reference_kps

REFERENCE = np.array([[26.73, 25.31], [37.62, 25.83], [31.77, 31.93]], np.float32)


def _rotate(points: np.ndarray, degrees: float, centre: np.ndarray) -> np.ndarray:
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (points - centre) @ rotation.T + centre


def _eye_and_nose_sizes(kps: np.ndarray) -> tuple[float, float]:
    a, b, c = kps.astype(np.float64)
    t = np.clip(np.dot(c - a, b - a) / np.dot(b - a, b - a), 0, 1)
    return float(np.linalg.norm(b - a)), float(np.linalg.norm(c - (a + t * (b - a))))


def _moving_copies(base: np.ndarray, scale: float, frames: int = 6) -> np.ndarray:
    """The face ``base`` scaled about the origin, moving right and down by 1 px per frame."""
    shifts = np.arange(frames, dtype=np.float64)[:, None, None] * np.array([1.0, 0.5])
    return (base.astype(np.float64)[None] * scale + 100.0 + shifts).astype(np.float32)


@pytest.fixture(scope="module")
def parity_driving(parity_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    track = load_kps(parity_dir / "inputs" / "astronaut_kps_64_40f.pth")
    reference = load_reference_kps(parity_dir / "inputs" / "astronaut_ref_kps_64.json")
    return reference, resample_kps_track(track, 32, compat="original")


def test_fix_face_and_no_retarget(parity_driving: tuple[np.ndarray, np.ndarray]) -> None:
    reference, driving = parity_driving
    for compat in ("fixed", "original"):
        np.testing.assert_array_equal(retarget_kps(reference, driving, "fix_face", compat), np.stack([reference] * 32))
        out = retarget_kps(reference, driving, "no_retarget", compat)
        np.testing.assert_array_equal(out, driving)
        assert out is not driving
    assert retarget_kps(reference, None, "fix_face", num_frames=5).shape == (5, 3, 2)


def _original_scales(reference: np.ndarray, driving: np.ndarray) -> np.ndarray:
    """The original's x and y scales: its frame selection ends on the last driving frame."""
    ref_eyes, ref_nose = _eye_and_nose_sizes(reference)
    last_eyes, last_nose = _eye_and_nose_sizes(driving[-1])
    return np.array([ref_eyes / last_eyes, ref_nose / last_nose])


def _offset_retarget_expected(reference: np.ndarray, driving: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """offset_retarget: the reference moved by minus half the scaled nose motion."""
    motion = (driving[:, 2, :] - driving[0, 2, :]) * scale
    return reference[None] - motion[:, None, :] / 2


def _naive_retarget_expected(reference: np.ndarray, driving: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """naive_retarget: the scaled driving track with its first nose put on the reference's nose."""
    return reference[2] + (driving - driving[0, 2, :]) * scale


@pytest.mark.parametrize(
    ("mode", "expected_of"),
    [("offset_retarget", _offset_retarget_expected), ("naive_retarget", _naive_retarget_expected)],
)
def test_original_retarget_follows_the_original_formula(
    parity_driving: tuple[np.ndarray, np.ndarray], mode: str, expected_of
) -> None:
    reference, driving = parity_driving
    out = retarget_kps(reference, driving, mode, compat="original")
    expected = expected_of(reference, driving, _original_scales(reference, driving))
    assert out.dtype == np.float32
    assert np.abs(out - expected).max() < 1e-4


def test_original_selection_bug_vs_fixed_arg_min() -> None:
    """Frame 0 is the reference itself, so arg-min picks it; the original's rule walks on to the last frame."""
    different = REFERENCE * np.array([1.0, 1.3], np.float32)  # another face shape, about the same ratio
    driving = np.stack([REFERENCE, REFERENCE + 1, different]).astype(np.float32)
    assert select_matching_frame(REFERENCE, driving) == 0
    fixed = retarget_kps(REFERENCE, driving, "naive_retarget")
    original = retarget_kps(REFERENCE, driving, "naive_retarget", compat="original")
    np.testing.assert_allclose(fixed[0], REFERENCE, atol=1e-5)  # scales measured on frame 0: exact copy
    assert np.abs(original[0] - REFERENCE).max() > 1.0  # scales measured on the last frame


@pytest.mark.parametrize("compat", ["fixed", "original"])
def test_upright_scaled_copies_map_onto_the_reference(compat: str) -> None:
    """Driving = the reference at twice the size, moving: both maths agree and frame 0 becomes the reference."""
    driving = _moving_copies(REFERENCE, 2.0)
    out = retarget_kps(REFERENCE, driving, "naive_retarget", compat)
    np.testing.assert_allclose(out[0], REFERENCE, atol=1e-4)
    np.testing.assert_allclose(out[5] - out[0], np.broadcast_to([2.5, 1.25], (3, 2)), atol=1e-4)


def test_fixed_scales_in_the_face_frame_of_a_tilted_driving_face() -> None:
    """A tilted driving face twice as wide: the output keeps the tilt and gets the reference's proportions."""
    nose = REFERENCE[2].astype(np.float64)
    eye_line = (REFERENCE[1] - REFERENCE[0]).astype(np.float64)
    eye_line /= np.linalg.norm(eye_line)
    offsets = REFERENCE.astype(np.float64) - nose
    wide = nose + offsets + np.outer(offsets @ eye_line, eye_line)  # twice as wide along the eye line
    tilted = _rotate(wide, 30.0, nose).astype(np.float32)[None]
    out = retarget_kps(REFERENCE, tilted, "naive_retarget")[0]
    np.testing.assert_allclose(_eye_and_nose_sizes(out), _eye_and_nose_sizes(REFERENCE), rtol=1e-4)
    np.testing.assert_allclose(out, _rotate(REFERENCE.astype(np.float64), 30.0, nose), atol=1e-3)
    original = retarget_kps(REFERENCE, tilted, "naive_retarget", compat="original")[0]
    assert abs(_eye_and_nose_sizes(original)[0] - _eye_and_nose_sizes(REFERENCE)[0]) > 0.5


def test_fixed_offset_follows_the_driving_direction() -> None:
    driving = _moving_copies(REFERENCE, 1.0)  # same size: scale 1
    fixed = retarget_kps(REFERENCE, driving, "offset_retarget")
    np.testing.assert_allclose(fixed[5] - REFERENCE, np.broadcast_to([5.0, 2.5], (3, 2)), atol=1e-4)
    half = retarget_kps(REFERENCE, driving, "offset_retarget", offset_gain=0.5)
    np.testing.assert_allclose(half[5] - REFERENCE, np.broadcast_to([2.5, 1.25], (3, 2)), atol=1e-4)
    original = retarget_kps(REFERENCE, driving, "offset_retarget", compat="original")
    np.testing.assert_allclose(original[5] - REFERENCE, np.broadcast_to([-2.5, -1.25], (3, 2)), atol=1e-4)


@pytest.mark.parametrize("strategy", ["offset_retarget", "naive_retarget"])
@pytest.mark.parametrize("compat", ["fixed", "original"])
def test_where_the_driving_face_sits_does_not_matter(
    parity_driving: tuple[np.ndarray, np.ndarray], strategy: str, compat: str
) -> None:
    reference, driving = parity_driving
    out = retarget_kps(reference, driving, strategy, compat)
    moved = retarget_kps(reference, driving + np.float32(7.0), strategy, compat)
    np.testing.assert_allclose(out, moved, atol=2e-3)


def test_bad_input() -> None:
    driving = _moving_copies(REFERENCE, 1.0)
    with pytest.raises(InputError, match="unknown retarget strategy"):
        retarget_kps(REFERENCE, driving, "face_swap")
    with pytest.raises(InputError, match="needs driving kps"):
        retarget_kps(REFERENCE, None, "naive_retarget")
    with pytest.raises(InputError, match=r"\(T, 3, 2\)"):
        retarget_kps(REFERENCE, driving[:, :2], "offset_retarget")
    with pytest.raises(InputError, match=r"\(3, 2\)"):
        retarget_kps(np.zeros((5, 2)), driving, "offset_retarget")
    collapsed = np.zeros((3, 3, 2), np.float32)
    with pytest.raises(InputError, match="on top of each other"):
        retarget_kps(REFERENCE, collapsed, "naive_retarget")
