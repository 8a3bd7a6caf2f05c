"""Resampling a driving kps track to the output frames, and rescaling it to the output frame size.

Two ways to map a driving track onto ``num_frames`` output frames:

* ``compat="fixed"`` (default), **by timestamp**: output frame *i* is shown at ``i / fps``; it takes the
  driving pose at that time, ``i / fps * track_fps`` in track frames, linearly interpolated between the two
  nearest track frames. A track without an fps (the original file format stores none) is taken to be at
  ``default_track_fps`` (30, what the original assumes). Past the end of the track, ``beyond_end`` decides:
  ``"mirror"`` (default: play the track backwards, then forwards again, so the head keeps moving without a
  jump), ``"loop"`` (start over, blending the last frame into the first) or ``"hold"`` (freeze on the last
  frame).
* ``compat="original"``, **by index** (docs/spec.md §4.6): a longer track is cut to its first ``num_frames``
  entries, then ``F.interpolate(mode="linear", align_corners=False)`` stretches it to ``num_frames`` (the
  identity when the lengths match). Frame *i* thus gets driving frame *i* whatever the frame rates are.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import InputError
from ..inputs.kps import KpsTrack
from ..options import check_compat

BeyondEnd = Literal["mirror", "loop", "hold"]
DEFAULT_TRACK_FPS = 30.0


def rescale_track(track: KpsTrack, width: int, height: int) -> KpsTrack:
    """The track in pixels of a ``width`` x ``height`` frame (x and y scaled separately, like a resize).

    A track of unknown frame size is returned unchanged: its coordinates are taken to be in output pixels.
    """
    if track.width is None or track.height is None or (track.width, track.height) == (width, height):
        return track
    scale = np.array([width / track.width, height / track.height], dtype=np.float64)
    points = (track.points.astype(np.float64) * scale).astype(np.float32)
    return KpsTrack(points, fps=track.fps, width=int(width), height=int(height))


def resample_by_index(points: np.ndarray, num_frames: int) -> np.ndarray:
    """The original's rule: cut to ``num_frames``, then linear ``F.interpolate`` to ``num_frames`` frames."""
    import torch

    sequence = torch.from_numpy(np.array(points, dtype=np.float32))
    if sequence.shape[0] > num_frames:
        sequence = sequence[:num_frames]
    stretched = torch.nn.functional.interpolate(sequence.permute(1, 2, 0), size=int(num_frames), mode="linear")
    return stretched.permute(2, 0, 1).contiguous().numpy()


def _source_positions(count: int, length: int, step: float, beyond_end: BeyondEnd) -> tuple[np.ndarray, ...]:
    """For output frames 0..count-1 at ``step`` track frames apart: (index0, index1, weight of index1)."""
    position = np.arange(count, dtype=np.float64) * step
    last = length - 1
    if last == 0:
        zeros = np.zeros(count, dtype=np.int64)
        return zeros, zeros, np.zeros(count)
    if beyond_end == "hold":
        position = np.minimum(position, last)
    elif beyond_end == "mirror":
        position = np.mod(position, 2 * last)
        position = np.where(position > last, 2 * last - position, position)
    elif beyond_end == "loop":
        position = np.mod(position, length)
    else:
        raise InputError(f"beyond_end must be 'mirror', 'loop' or 'hold', got {beyond_end!r}")
    index0 = np.floor(position).astype(np.int64)
    weight = position - index0
    index0 = np.minimum(index0, last)
    index1 = (index0 + 1) % length if beyond_end == "loop" else np.minimum(index0 + 1, last)
    return index0, index1, weight


def resample_by_time(
    points: np.ndarray, num_frames: int, fps: float, track_fps: float, beyond_end: BeyondEnd = "mirror"
) -> np.ndarray:
    """Output frame i (at ``i / fps`` s) gets the track's pose at that time, linearly interpolated."""
    if fps <= 0 or track_fps <= 0:
        raise InputError(f"fps and track_fps must be positive, got {fps} and {track_fps}")
    source = np.asarray(points, dtype=np.float64)
    index0, index1, weight = _source_positions(int(num_frames), source.shape[0], track_fps / fps, beyond_end)
    weight = weight[:, None, None]
    return ((1.0 - weight) * source[index0] + weight * source[index1]).astype(np.float32)


def resample_kps_track(
    track: KpsTrack | np.ndarray,
    num_frames: int,
    fps: float | None = None,
    *,
    compat: str = "fixed",
    default_track_fps: float = DEFAULT_TRACK_FPS,
    beyond_end: BeyondEnd = "mirror",
) -> np.ndarray:
    """Driving kps for ``num_frames`` output frames at ``fps``: float32 [num_frames, 3, 2] (see module doc)."""
    if not isinstance(track, KpsTrack):
        track = KpsTrack(np.asarray(track, dtype=np.float32))
    if num_frames <= 0:
        raise InputError(f"num_frames must be positive, got {num_frames}")
    if check_compat(compat) == "original":
        return resample_by_index(track.points, num_frames)
    if fps is None:
        raise InputError("resampling by timestamp needs the output fps")
    track_fps = track.fps if track.fps is not None else default_track_fps
    return resample_by_time(track.points, num_frames, fps, track_fps, beyond_end)
