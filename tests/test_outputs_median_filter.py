"""The median post-filter against SciPy's reference implementation, and the one rule for when it runs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import median_filter

from vexpress_model.outputs.median_filter import (
    MedianFilterStream,
    median_filter_3d,
    median_filter_enabled,
    median_filtered_chunks,
)


@pytest.mark.parametrize("shape", [(1, 5, 7, 3), (2, 4, 4, 3), (7, 9, 6, 3), (5, 1, 8, 3), (4, 6, 1, 1)])
def test_equals_scipy_mirror_median(shape):
    frames = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    expected = median_filter(frames, size=(3, 3, 3, 1), mode="mirror")
    np.testing.assert_array_equal(median_filter_3d(frames), expected)
    for chunk in (1, 2, 3):
        pieces = [frames[i : i + chunk] for i in range(0, len(frames), chunk)]
        np.testing.assert_array_equal(np.concatenate(list(median_filtered_chunks(pieces))), expected)


def test_each_frame_is_filtered_once():
    """Two-frame chunks emit two frames each (the lag of one frame aside), with no frame filtered twice."""
    frames = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    stream = MedianFilterStream()
    emitted = [len(stream.push(frames[i : i + 2])) for i in range(0, 6, 2)]
    assert emitted == [1, 2, 2] and len(stream.flush()) == 1


@pytest.mark.parametrize(
    "choice, compat, expected",
    [("auto", "original", True), ("auto", "fixed", False), (None, "original", True), ("on", "fixed", True),
     ("off", "original", False), (True, "fixed", True), (False, "original", False)],
)
def test_the_rule(choice, compat, expected):
    assert median_filter_enabled(choice, compat) is expected
