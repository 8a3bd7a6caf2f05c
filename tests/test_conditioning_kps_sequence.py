"""Resampling a kps track to the output frames: by timestamp (default) and by the original's index rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vexpress_model.conditioning.kps_sequence import (
    fix_face,
    resample_by_index,
    resample_by_time,
    rescale_track,
    resample_kps_track,
)
from vexpress_model.inputs.kps import KpsTrack


def _ramp(frames: int) -> np.ndarray:
    """A track whose every coordinate equals its frame index (so positions are easy to read back)."""
    return np.broadcast_to(np.arange(frames, dtype=np.float32)[:, None, None], (frames, 3, 2)).copy()


def _torch_rule(points: np.ndarray, num_frames: int) -> np.ndarray:
    tensor = torch.tensor(points)
    if tensor.shape[0] > num_frames:
        tensor = tensor[:num_frames]
    out = torch.nn.functional.interpolate(tensor.permute(1, 2, 0), size=num_frames, mode="linear")
    return out.permute(2, 0, 1).numpy()


@pytest.mark.parametrize("length, frames", [(40, 32), (32, 32), (10, 32), (137, 124), (1, 5), (7, 3)])
def test_index_rule_is_the_originals(length: int, frames: int) -> None:
    points = np.random.default_rng(length).normal(100, 20, (length, 3, 2)).astype(np.float32)
    out = resample_kps_track(KpsTrack(points), frames, compat="original")
    assert out.shape == (frames, 3, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out, _torch_rule(points, frames))


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
