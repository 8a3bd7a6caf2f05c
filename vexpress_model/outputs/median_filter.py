"""The original's median post-filter (SPEC §4.15) and the rule for when it runs.

Each output value is the median of the 3 x 3 x 3 neighbourhood in (frame, row, column), per colour channel,
with mirror padding at every border (``torch``'s ``"reflect"``: the border sample is not repeated). Filtering
the truncated uint8 frames equals filtering the floats and then truncating (the median commutes with any
monotone map), so it runs on uint8 after decoding.

Every output frame is computed exactly once, also when frames arrive in chunks (:class:`MedianFilterStream`
holds back one frame): for each frame the 27 neighbourhood values are laid side by side and partially sorted
(``np.partition`` for the 14th of 27), which is also faster than ``scipy.ndimage.median_filter`` on the same
frames (benchmarks/bench_median_filter.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ..options import MEDIAN_FILTER_MODES, check_choice


def median_filter_enabled(choice: str | bool | None, compat: str) -> bool:
    """Whether to filter: ``on``/``off`` (or True/False) as given, ``auto``/None on only with compat original."""
    if choice is None or choice == "auto":
        return compat == "original"
    if isinstance(choice, bool):
        return choice
    return check_choice(choice, MEDIAN_FILTER_MODES, "median filter") == "on"


def _mirror_pad(frame: np.ndarray) -> np.ndarray:
    """One pixel of mirror padding on rows and columns (a 1-pixel side mirrors onto itself)."""
    for axis in (0, 1):
        widths = [(0, 0)] * frame.ndim
        widths[axis] = (1, 1)
        frame = np.pad(frame, widths, mode="reflect" if frame.shape[axis] > 1 else "edge")
    return frame


def _filter_middle(before: np.ndarray, frame: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The filtered ``frame`` [H, W, C] given its temporal neighbours (already mirrored at the clip's ends)."""
    height, width = frame.shape[:2]
    padded = [_mirror_pad(f) for f in (before, frame, after)]
    neighbourhood = np.stack(
        [p[dy : dy + height, dx : dx + width] for p in padded for dy in range(3) for dx in range(3)], axis=-1
    )
    return np.partition(neighbourhood, 13, axis=-1)[..., 13]


def median_filter_3d(frames: np.ndarray) -> np.ndarray:
    """The filter over a whole clip ``frames`` [T, H, W, C] of any numeric dtype (same shape and dtype back)."""
    array = np.asarray(frames)
    if array.ndim != 4:
        raise ValueError(f"frames must be [T, H, W, C], got {array.shape}")
    return np.concatenate(list(median_filtered_chunks([array]))) if len(array) else array.copy()


class MedianFilterStream:
    """:func:`median_filter_3d` over frames that arrive in chunks; output lags input by one frame."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None  # the frame before the first pending one
        self._pending: list[np.ndarray] = []

    def push(self, frames: np.ndarray) -> np.ndarray:
        """Add frames [n, H, W, C]; return the frames whose filtered value is now final."""
        self._pending.extend(np.asarray(frames))
        if len(self._pending) < 2:
            return np.empty((0, *self._pending[0].shape), self._pending[0].dtype) if self._pending else np.empty(0)
        frames_in = self._pending
        before = self._previous if self._previous is not None else frames_in[1]  # mirror at the start
        out = np.empty((len(frames_in) - 1, *frames_in[0].shape), frames_in[0].dtype)
        for index in range(len(frames_in) - 1):
            out[index] = _filter_middle(before, frames_in[index], frames_in[index + 1])
            before = frames_in[index]
        self._previous = frames_in[-2]
        self._pending = frames_in[-1:]
        return out

    def flush(self) -> np.ndarray:
        """The remaining (last) frame, filtered with the mirror border at the end."""
        if not self._pending:
            return np.empty(0)
        last = self._pending[0]
        neighbour = self._previous if self._previous is not None else last
        self._pending = []
        return _filter_middle(neighbour, last, neighbour)[None]


def median_filtered_chunks(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """:func:`median_filter_3d` over a stream of frame chunks, yielding filtered chunks as they become final."""
    stream = MedianFilterStream()
    for chunk in chunks:
        filtered = stream.push(chunk)
        if len(filtered):
            yield filtered
    tail = stream.flush()
    if len(tail):
        yield tail
