"""Frame counts, output fps and context windows (docs/spec.md §4.5; issue 4 "Frame timing")."""

from __future__ import annotations

import json

import pytest

from vexpress_model.errors import InputError
from vexpress_model.pipeline.windows import context_windows, frame_window_counts, plan_frames

WINDOW_SETTINGS = [(24, 4), (12, 4), (8, 4), (6, 2), (16, 0), (32, 8), (1, 0)]


def _check_cover(num_frames: int, windows: tuple[range, ...], size: int) -> None:
    assert windows, "at least one window"
    seen: set[int] = set()
    for window in windows:
        frames = list(window)
        assert len(frames) == len(set(frames)), "a window holds a frame twice"
        assert len(frames) == min(size, num_frames), "every window has the same length"
        assert frames == list(range(frames[0], frames[0] + len(frames))), "windows are contiguous"
        assert 0 <= frames[0] and frames[-1] < num_frames, "no frame outside the video (no wrap-around)"
        seen.update(frames)
    assert seen == set(range(num_frames)), "every frame is covered"
    starts = [w.start for w in windows]
    assert starts == sorted(set(starts)), "windows are in order and distinct"


@pytest.mark.parametrize("duration", [0.3, 1.0, 2.5, 10.0, 0.01, 0.8, 1.45, 31.18])
@pytest.mark.parametrize("size,overlap", WINDOW_SETTINGS)
@pytest.mark.parametrize("fps", [30.0, 25.0, 24.0])
def test_fixed_mode_frame_count_fps_and_windows(duration: float, size: int, overlap: int, fps: float) -> None:
    plan = plan_frames(duration, fps, size, overlap)
    assert plan.num_frames == max(1, int(duration * fps + 0.5))
    assert plan.fps == fps
    _check_cover(plan.num_frames, plan.windows, size)
    stride = size - overlap
    # Interior windows keep the requested stride; only the last one may be pulled back.
    for a, b in zip(plan.windows[:-2], plan.windows[1:-1]):
        assert b.start - a.start == stride
    if len(plan.windows) > 1:
        assert plan.windows[-1].stop == plan.num_frames
        assert 0 < plan.windows[-1].start - plan.windows[-2].start <= stride


def test_fixed_mode_examples() -> None:
    assert plan_frames(0.3, 30, 24, 4).num_frames == 9
    assert plan_frames(0.3, 30, 24, 4).windows == (range(0, 9),)
    assert plan_frames(1.0, 30, 24, 4).windows == (range(0, 24), range(6, 30))
    plan = plan_frames(10.0, 30, 24, 4)
    assert plan.num_frames == 300 and plan.fps == 30.0
    assert [w.start for w in plan.windows] == list(range(0, 276, 20)) + [276]
    assert plan_frames(2.5, 30, 12, 4).num_frames == 75
    # A frame count of whole windows gives exactly the original's windows.
    assert plan_frames(44 / 30, 30, 24, 4).windows == context_windows(44, 24, 4, "original")


@pytest.mark.parametrize(
    "duration,frames,fps_out",
    [(1.0, 24, 24.0), (1.45, 24, 24 / 1.45), (2.0, 44, 22.0), (3.0, 84, 28.0), (4.57, 124, 124 / 4.57),
     (5.0, 144, 28.8), (10.0, 284, 28.4), (31.0, 924, 924 / 31.0)],
)
def test_original_mode_spec_examples(duration: float, frames: int, fps_out: float) -> None:
    plan = plan_frames(duration, 30.0, 24, 4, compat="original")
    assert plan.num_frames == frames
    assert plan.fps == pytest.approx(fps_out)
    assert plan.windows == tuple(range(20 * k, 20 * k + 24) for k in range((frames - 24) // 20 + 1))
    _check_cover(plan.num_frames, plan.windows, 24)


def test_original_mode_rejects_audio_shorter_than_one_window() -> None:
    with pytest.raises(InputError, match="at least one whole context window"):
        plan_frames(0.79, 30.0, 24, 4, compat="original")
    assert plan_frames(0.8, 30.0, 24, 4, compat="original").num_frames == 24


@pytest.mark.parametrize("case", ["S1_fix_face", "S2_no_retarget"])
def test_original_mode_matches_the_parity_cases(parity_dir, case: str) -> None:
    meta = json.loads((parity_dir / "outputs" / case / "case.json").read_text())
    args, expected = meta["cli_args"], meta["expected"]
    plan = plan_frames(
        expected["duration_s"], float(args["fps"]), args["context_frames"], args["context_overlap"], "original"
    )
    assert plan.num_frames == expected["video_length"]
    assert plan.fps == pytest.approx(expected["fps_out"])
    assert [[w.start, w.stop - 1] for w in plan.windows] == expected["context_indices"]


def test_window_counts() -> None:
    windows = context_windows(30, 24, 4)
    counts = frame_window_counts(30, windows)
    assert counts == [1] * 6 + [2] * 18 + [1] * 6
    assert frame_window_counts(44, context_windows(44, 24, 4, "original")) == [1] * 20 + [2] * 4 + [1] * 20


@pytest.mark.parametrize("size,overlap", [(0, 0), (33, 4), (8, 8), (8, -1)])
def test_bad_window_settings(size: int, overlap: int) -> None:
    with pytest.raises(InputError):
        plan_frames(2.0, 30.0, size, overlap)


def test_bad_durations_and_compat() -> None:
    for duration in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InputError):
            plan_frames(duration, 30.0, 24, 4)
    with pytest.raises(InputError):
        plan_frames(1.0, 0.0, 24, 4)
    with pytest.raises(ValueError):
        plan_frames(1.0, 30.0, 24, 4, compat="newest")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        context_windows(30, 24, 4, "original")


def test_frame_count_is_the_default_timing_of_plan_frames():
    from vexpress_model.errors import InputError
    from vexpress_model.pipeline.windows import frame_count, plan_frames

    for duration in (0.01, 0.3, 1.0, 2.5, 10.0, 1 / 60):
        assert frame_count(duration, 30) == plan_frames(duration, 30, 24, 4).num_frames
    assert frame_count(0.05, 30) == 2  # 1.5 frames rounds half up
    with pytest.raises(InputError):
        frame_count(0.0, 30)
