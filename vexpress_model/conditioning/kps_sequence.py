"""Driving-track preparation: from a driving kps track to the per-frame kps of the output video.

:func:`kps_for_frames` is the whole step (rescale, resample, retarget), shared by the command line and the ComfyUI
nodes; resampling lives in :mod:`.kps_resample`, the retarget strategies in :mod:`.retarget`.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..inputs.kps import KpsTrack
from ..options import RETARGET_STRATEGIES, check_choice
from .kps_resample import resample_kps_track, rescale_track
from .retarget import retarget_kps


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
    check_choice(strategy, RETARGET_STRATEGIES, "retarget strategy")
    if num_frames is not None and num_frames <= 0:
        raise InputError(f"num_frames must be positive, got {num_frames}")
    track_fps = float(fps)
    if strategy == "fix_face":
        if reference_kps is None:
            raise InputError("fix_face needs the reference kps")
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
        raise InputError(f"retarget strategy {strategy} needs the reference kps")
    return KpsTrack(points, fps=track_fps, width=int(width), height=int(height))
