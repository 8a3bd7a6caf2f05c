"""Resampling a kps track to the output frames: by timestamp (default) and by the original's index rule."""

from __future__ import annotations

import numpy as np
import pytest

from vexpress_model.conditioning.kps_resample import (
    resample_by_index,
    resample_by_time,
    resample_kps_track,
    rescale_track,
)
from vexpress_model.conditioning.retarget import fix_face
from vexpress_model.inputs.kps import KpsTrack


def _ramp(frames: int) -> np.ndarray:
    """A track whose every coordinate equals its frame index (so positions are easy to read back)."""
    return np.broadcast_to(np.arange(frames, dtype=np.float32)[:, None, None], (frames, 3, 2)).copy()


def _spec_rule(points: np.ndarray, num_frames: int) -> np.ndarray:
    """docs/spec.md's index rule from its definition: cut to ``num_frames``, then output frame i reads source position
    ``(i + 0.5) * L / T - 0.5`` clamped to ``[0, L - 1]``, linearly between its neighbours (``align_corners=False``)."""
    points = points[:num_frames].astype(np.float64)
    length = len(points)
    source = np.clip((np.arange(num_frames) + 0.5) * length / num_frames - 0.5, 0, length - 1)
    flat = points.reshape(length, -1)
    columns = [np.interp(source, np.arange(length), flat[:, k]) for k in range(flat.shape[1])]
    return np.stack(columns, axis=1).reshape(num_frames, 3, 2)


@pytest.mark.parametrize("length, frames", [(40, 32), (32, 32), (10, 32), (137, 124), (1, 5), (7, 3)])
def test_index_rule_is_the_originals(length: int, frames: int) -> None:
    points = np.random.default_rng(length).normal(100, 20, (length, 3, 2)).astype(np.float32)
    out = resample_kps_track(KpsTrack(points), frames, compat="original")
    assert out.shape == (frames, 3, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, _spec_rule(points, frames), atol=1e-3)  # float32 positions in the code


def test_index_rule_truncates_then_keeps_frames() -> None:
    out = resample_by_index(_ramp(40), 32)
    np.testing.assert_array_equal(out[:, 0, 0], np.arange(32, dtype=np.float32))


def test_index_rule_stretch_matches_align_corners_false() -> None:
    """A 4-frame ramp stretched to 8 frames: source = (i + 0.5) * 4/8 - 0.5, clamped to [0, 3]."""
    out = resample_by_index(_ramp(4), 8)[:, 0, 0]
    source = np.clip((np.arange(8) + 0.5) * 0.5 - 0.5, 0, 3)
    np.testing.assert_allclose(out, source, atol=1e-6)


def test_by_time_follows_the_clock() -> None:
    """A 25 fps track shown at 30 fps: output frame i shows track time i/30 s = track frame i * 25/30."""
    track = KpsTrack(_ramp(50), fps=25.0)
    out = resample_kps_track(track, 30, fps=30.0)
    np.testing.assert_allclose(out[:, 2, 1], np.arange(30) * 25 / 30, atol=1e-5)


def test_by_time_same_rate_is_identity_and_unknown_fps_defaults_to_30() -> None:
    points = np.random.default_rng(1).normal(50, 5, (20, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(resample_kps_track(KpsTrack(points, fps=30.0), 20, fps=30.0), points)
    np.testing.assert_array_equal(resample_kps_track(KpsTrack(points), 20, fps=30.0), points)
    slower = resample_kps_track(KpsTrack(points), 10, fps=15.0)  # unknown fps: 30, every second frame
    np.testing.assert_array_equal(slower, points[::2])


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("hold", [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]),
        ("mirror", [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]),
        ("loop", [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]),
    ],
)
def test_beyond_the_end(mode: str, expected: list[int]) -> None:
    out = resample_by_time(_ramp(4), 10, fps=30.0, track_fps=30.0, beyond_end=mode)
    np.testing.assert_array_equal(out[:, 0, 0], np.array(expected, np.float32))


def test_loop_blends_the_last_frame_into_the_first() -> None:
    out = resample_by_time(_ramp(4), 4, fps=2.0, track_fps=3.0, beyond_end="loop")  # positions 0, 1.5, 3, 4.5
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 1.5, 3.0, 0.5])


def test_single_frame_track_repeats() -> None:
    out = resample_kps_track(KpsTrack(_ramp(1) + 7), 5, fps=30.0)
    np.testing.assert_array_equal(out, np.full((5, 3, 2), 7, np.float32))


def test_rescale_to_the_output_frame() -> None:
    track = KpsTrack(np.full((2, 3, 2), [100.0, 50.0], np.float32), fps=25.0, width=200, height=100)
    scaled = rescale_track(track, 64, 64)
    np.testing.assert_allclose(scaled.points[0, 0], [32.0, 32.0])
    assert (scaled.width, scaled.height, scaled.fps) == (64, 64, 25.0)
    unknown = KpsTrack(track.points)
    assert rescale_track(unknown, 64, 64) is unknown


def test_fix_face() -> None:
    reference = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    out = fix_face(reference, 4)
    assert out.shape == (4, 3, 2) and out.flags.writeable
    np.testing.assert_array_equal(out, np.stack([reference] * 4))
    with pytest.raises(ValueError):
        fix_face(np.zeros((5, 2)), 3)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        resample_kps_track(_ramp(4), 0, fps=30.0)
    with pytest.raises(ValueError):
        resample_kps_track(_ramp(4), 4)  # by timestamp needs the fps
    with pytest.raises(ValueError):
        resample_kps_track(_ramp(4), 4, fps=30.0, compat="other")


# ------------------------------------------------------------------------------------ kps_for_frames (issue 5)

REFERENCE = np.array([[20.0, 24.0], [44.0, 24.0], [32.0, 40.0]], np.float32)


def _moving(frames: int, fps: float | None = 25.0, size: tuple[int, int] | None = (128, 128)) -> KpsTrack:
    """A driving face (twice the reference, in a 128x128 frame) whose nose drifts right by one pixel per frame."""
    points = np.stack([REFERENCE * 2 + [i, 0.5 * i] for i in range(frames)]).astype(np.float32)
    width, height = size if size is not None else (None, None)
    return KpsTrack(points, fps=fps, width=width, height=height)


@pytest.mark.parametrize("compat", ["fixed", "original"])
@pytest.mark.parametrize("strategy", ["no_retarget", "offset_retarget", "naive_retarget"])
def test_kps_for_frames_is_rescale_resample_retarget(strategy: str, compat: str) -> None:
    from vexpress_model.conditioning.kps_sequence import kps_for_frames
    from vexpress_model.conditioning.retarget import retarget_kps

    driving = _moving(40)
    track = kps_for_frames(REFERENCE, driving, strategy, 30, 30.0, 64, 64, compat)
    steps = resample_kps_track(rescale_track(driving, 64, 64), 30, 30.0, compat=compat)
    np.testing.assert_array_equal(track.points, retarget_kps(REFERENCE, steps, strategy, compat))
    assert (track.num_frames, track.fps, track.width, track.height) == (30, 30.0, 64, 64)


def test_kps_for_frames_fix_face_lengths_and_fps() -> None:
    from vexpress_model.conditioning.kps_sequence import kps_for_frames

    moving = _moving(12, fps=24.0)
    for driving, num_frames, expected_frames, expected_fps in (
        (None, 7, 7, 30.0),  # the clip's frames
        (moving, 7, 7, 30.0),  # the driving motion is not used
        (moving, None, 12, 24.0),  # as many frames as the driving track, at its rate
        (None, None, 1, 30.0),  # one frame, stretched over the clip by the pipeline
    ):
        track = kps_for_frames(REFERENCE, driving, "fix_face", num_frames, 30.0, 64, 64)
        assert (track.num_frames, track.fps) == (expected_frames, expected_fps)
        np.testing.assert_array_equal(track.points, np.broadcast_to(REFERENCE, track.points.shape))


def test_kps_for_frames_keeps_the_driving_frames_when_no_count_is_given() -> None:
    from vexpress_model.conditioning.kps_sequence import kps_for_frames

    driving = _moving(9, fps=12.5)
    track = kps_for_frames(None, driving, "no_retarget", None, 30.0, 64, 64)
    np.testing.assert_allclose(track.points, driving.points / 2, atol=1e-6)
    assert track.fps == 12.5 and track.points is not driving.points
    unknown = kps_for_frames(None, _moving(9, fps=None, size=None), "no_retarget", None, 30.0, 64, 64)
    assert unknown.fps == 30.0 and unknown.num_frames == 9
    np.testing.assert_array_equal(unknown.points, _moving(9).points)  # unknown size: already output pixels


def test_kps_for_frames_keep_matching_length() -> None:
    """A track made for these frames (RetargetKps) is used frame for frame; any other length is resampled by time."""
    from vexpress_model.conditioning.kps_sequence import kps_for_frames

    made_for_it = _moving(10, fps=25.0, size=(64, 64))
    kept = kps_for_frames(None, made_for_it, "no_retarget", 10, 30.0, 64, 64, keep_matching_length=True)
    np.testing.assert_array_equal(kept.points, made_for_it.points)
    resampled = kps_for_frames(None, made_for_it, "no_retarget", 10, 30.0, 64, 64)
    np.testing.assert_array_equal(resampled.points, resample_kps_track(made_for_it, 10, 30.0))
    assert not np.array_equal(resampled.points, kept.points)
    longer = kps_for_frames(None, made_for_it, "no_retarget", 14, 30.0, 64, 64, keep_matching_length=True)
    np.testing.assert_array_equal(longer.points, resample_kps_track(made_for_it, 14, 30.0))


def test_kps_for_frames_errors() -> None:
    from vexpress_model.conditioning.kps_sequence import kps_for_frames
    from vexpress_model.errors import InputError

    with pytest.raises(InputError, match="driving kps"):
        kps_for_frames(REFERENCE, None, "offset_retarget", 10, 30.0, 64, 64)
    with pytest.raises(InputError, match="unknown retarget strategy"):
        kps_for_frames(REFERENCE, _moving(4), "sideways", 10, 30.0, 64, 64)
    with pytest.raises(ValueError, match="reference kps"):
        kps_for_frames(None, _moving(4), "naive_retarget", 10, 30.0, 64, 64)
    with pytest.raises(ValueError, match="reference kps"):
        kps_for_frames(None, None, "fix_face", 10, 30.0, 64, 64)
    with pytest.raises(ValueError):
        kps_for_frames(REFERENCE, None, "fix_face", 0, 30.0, 64, 64)


def test_kps_for_frames_reproduces_the_s2_sequence(parity_dir) -> None:
    """The original's S2 case (40 driving frames, 32 output frames, no_retarget, index rule) through the one call."""
    from vexpress_model.conditioning.kps_sequence import kps_for_frames
    from vexpress_model.inputs.kps import load_kps, load_reference_kps

    track = load_kps(parity_dir / "inputs" / "astronaut_kps_64_40f.pth")
    reference = load_reference_kps(parity_dir / "inputs" / "astronaut_ref_kps_64.json")
    sequence = kps_for_frames(reference, track, "no_retarget", 32, 30.0, 64, 64, "original").points
    expected = np.load(parity_dir / "outputs" / "S2_no_retarget" / "kps_sequence.npy")
    assert np.abs(sequence - expected).max() <= 1e-4
