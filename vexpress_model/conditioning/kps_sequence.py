"""Driving keypoint sequences for the output frames: resampling a track, rescaling it, ``fix_face``.

Two ways to map a driving track onto ``num_frames`` output frames:

* ``compat="fixed"`` (default), **by timestamp**: output frame *i* is shown at ``i / fps``; it takes the
  driving pose at that time, ``i / fps * track_fps`` in track frames, linearly interpolated between the two
  nearest track frames. A track without an fps (the original file format stores none) is taken to be at
  ``default_track_fps`` (30, what the original assumes). Past the end of the track, ``beyond_end`` decides:
  ``"mirror"`` (default: play the track backwards, then forwards again, so the head keeps moving without a
  jump), ``"loop"`` (start over, blending the last frame into the first) or ``"hold"`` (freeze on the last
  frame).
* ``compat="original"``, **by index** (SPEC §4.6): a longer track is cut to its first ``num_frames``
  entries, then ``F.interpolate(mode="linear", align_corners=False)`` stretches it to ``num_frames`` (the
  identity when the lengths match). Frame *i* thus gets driving frame *i* whatever the frame rates are.

:func:`kps_for_frames` is the whole step from a driving track to the per-frame kps of the output video (rescale,
resample, retarget), shared by the command line and the ComfyUI nodes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..inputs.kps import KpsTrack

BeyondEnd = Literal["mirror", "loop", "hold"]
DEFAULT_TRACK_FPS = 30.0


def fix_face(reference_kps: np.ndarray, num_frames: int) -> np.ndarray:
    """The reference kps for every frame: float32 [num_frames, 3, 2] (the ``fix_face`` strategy)."""
    reference = np.asarray(reference_kps, dtype=np.float32)
    if reference.shape != (3, 2):
        raise ValueError(f"reference_kps must have shape (3, 2), got {reference.shape}")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    return np.ascontiguousarray(np.broadcast_to(reference, (int(num_frames), 3, 2)))


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
        raise ValueError(f"beyond_end must be 'mirror', 'loop' or 'hold', got {beyond_end!r}")
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
        raise ValueError(f"fps and track_fps must be positive, got {fps} and {track_fps}")
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
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if compat == "original":
        return resample_by_index(track.points, num_frames)
    if compat != "fixed":
        raise ValueError(f"compat must be 'fixed' or 'original', got {compat!r}")
    if fps is None:
        raise ValueError("resampling by timestamp needs the output fps")
    track_fps = track.fps if track.fps is not None else default_track_fps
    return resample_by_time(track.points, num_frames, fps, track_fps, beyond_end)


def kps_for_frames(
    reference_kps: np.ndarray | None,
    driving: KpsTrack | None,
    strategy: str,
    num_frames: int | None,
    fps: float,
    width: int,
    height: int,
    compat: str = "fixed",
    *,
    keep_matching_length: bool = False,
) -> KpsTrack:
    """The kps track that drives the output frames: float32 [T, 3, 2] in pixels of the ``width`` x ``height`` frame.

    What the command line and the ComfyUI nodes (RetargetKps, the sampler) all do with a driving track:

    1. ``driving`` is rescaled to the output frame (:func:`rescale_track`; a track of unknown size is taken to be in
       output pixels already);
    2. it is fitted to ``num_frames`` output frames at ``fps`` (:func:`resample_kps_track`: by timestamp, or by the
       original's index rule in ``compat="original"``). ``num_frames=None`` keeps the track's own frames and frame
       rate. ``keep_matching_length``: a track that already has ``num_frames`` frames is taken frame for frame
       (one made for these frames, e.g. by RetargetKps), not resampled by time;
    3. it is retargeted onto ``reference_kps`` [3, 2] with ``strategy``
       (:func:`~vexpress_model.conditioning.retarget.retarget_kps`). ``fix_face`` uses no driving motion: the
       reference kps for ``num_frames`` frames, else for as many frames as the driving track has, else for one
       frame (which the pipeline stretches over the clip). ``no_retarget`` needs no ``reference_kps``.

    The result's ``fps`` is ``fps``, or the driving track's own (when known) if its frames were kept.
    """
    # Imported here: retarget imports this module (fix_face).
    from ..errors import InputError
    from .retarget import STRATEGIES, retarget_kps

    if strategy not in STRATEGIES:
        raise InputError(f"unknown retarget strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if num_frames is not None and num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    track_fps = float(fps)
    if strategy == "fix_face":
        if reference_kps is None:
            raise ValueError("fix_face needs the reference kps")
        count = num_frames if num_frames is not None else (driving.num_frames if driving is not None else 1)
        if num_frames is None and driving is not None and driving.fps is not None:
            track_fps = driving.fps
        points = retarget_kps(reference_kps, None, "fix_face", compat, num_frames=count)
        return KpsTrack(points, fps=track_fps, width=int(width), height=int(height))
    if driving is None:
        raise InputError(
            f"retarget strategy {strategy} follows a driving kps track, but none was given; extract one from a "
            "driving video, or use fix_face"
        )
    track = rescale_track(driving, width, height)
    if num_frames is None or (keep_matching_length and track.num_frames == num_frames):
        sequence = track.points
        if num_frames is None and track.fps is not None:
            track_fps = track.fps
    else:
        sequence = resample_kps_track(track, num_frames, fps, compat=compat)
    if reference_kps is not None:
        points = retarget_kps(reference_kps, sequence, strategy, compat)
    elif strategy == "no_retarget":
        points = np.array(sequence, dtype=np.float32)  # a copy: the caller's track stays its own
    else:
        raise ValueError(f"retarget strategy {strategy} needs the reference kps")
    return KpsTrack(points, fps=track_fps, width=int(width), height=int(height))
