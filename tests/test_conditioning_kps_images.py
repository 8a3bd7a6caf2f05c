"""V-Kps drawing is pixel-identical to the original (parity fixtures), and the S2 kps sequence is reproduced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vexpress_model.conditioning.kps_images import draw_kps_image, draw_kps_images
from vexpress_model.conditioning.kps_resample import resample_kps_track
from vexpress_model.conditioning.retarget import retarget_kps
from vexpress_model.inputs.kps import load_kps, load_reference_kps

CASES = ("S1_fix_face", "S2_no_retarget")


@pytest.mark.parametrize("case", CASES)
def test_kps_images_match_the_original_exactly(parity_dir: Path, case: str) -> None:
    outputs = parity_dir / "outputs" / case
    kps = np.load(outputs / "kps_sequence.npy")
    expected = np.load(outputs / "kps_images.npy")
    images = draw_kps_images(64, 64, kps)
    assert images.dtype == np.uint8 and images.shape == expected.shape
    np.testing.assert_array_equal(images, expected)


def test_s2_kps_sequence_from_the_driving_file(parity_dir: Path) -> None:
    """40 driving frames, the original's index rule for 32 frames, no_retarget: the recorded sequence."""
    track = load_kps(parity_dir / "inputs" / "astronaut_kps_64_40f.pth")
    reference = load_reference_kps(parity_dir / "inputs" / "astronaut_ref_kps_64.json")
    driving = resample_kps_track(track, 32, compat="original")
    sequence = retarget_kps(reference, driving, "no_retarget", compat="original")
    expected = np.load(parity_dir / "outputs" / "S2_no_retarget" / "kps_sequence.npy")
    assert sequence.shape == expected.shape and sequence.dtype == np.float32
    assert np.abs(sequence - expected).max() <= 1e-4


def test_s1_kps_sequence_is_the_reference_repeated(parity_dir: Path) -> None:
    reference = load_reference_kps(parity_dir / "inputs" / "astronaut_ref_kps_64.json")
    sequence = retarget_kps(reference, None, "fix_face", compat="original", num_frames=24)
    expected = np.load(parity_dir / "outputs" / "S1_fix_face" / "kps_sequence.npy")
    assert np.abs(sequence - expected).max() <= 1e-4


def test_colours_and_layers() -> None:
    kps = np.array([[20.5, 20.5], [44.5, 20.5], [32.5, 40.5]], np.float32)
    image = draw_kps_image(64, 80, kps)
    assert image.shape == (64, 80, 3)
    # points on top, in full colour, at the truncated coordinates
    assert tuple(image[20, 20]) == (255, 0, 0)
    assert tuple(image[20, 44]) == (0, 255, 0)
    assert tuple(image[40, 32]) == (0, 0, 255)
    # limbs in 60 % of the first point's colour, between the points
    assert tuple(image[30, 26]) == (153, 0, 0)
    assert tuple(image[30, 38]) == (0, 153, 0)
    assert image[0, 0].sum() == 0
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours <= {(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (153, 0, 0), (0, 153, 0)}


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError):
        draw_kps_image(64, 64, np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError):
        draw_kps_images(64, 64, np.zeros((3, 2), np.float32))


def test_kps_image_source_draws_a_still_face_once() -> None:
    from vexpress_model.conditioning.kps_images import kps_image_source

    still = np.broadcast_to(np.array([[20.5, 20.5], [44.5, 20.5], [32.5, 40.5]], np.float32), (6, 3, 2))
    image = kps_image_source(still, 48, 64)
    assert isinstance(image, np.ndarray) and image.shape == (64, 48, 3)
    np.testing.assert_array_equal(image, draw_kps_image(64, 48, still[0]))


def test_kps_image_source_draws_moving_frames_on_demand() -> None:
    from vexpress_model.conditioning.kps_images import kps_image_source

    moving = np.stack([np.array([[20, 20], [44, 20], [32, 40]], np.float32) + i for i in range(6)])
    source = kps_image_source(moving, 48, 64)
    assert callable(source)
    np.testing.assert_array_equal(source(2, 5), draw_kps_images(64, 48, moving[2:5]))
    with pytest.raises(ValueError):
        kps_image_source(np.zeros((0, 3, 2), np.float32), 48, 64)


def test_kps_preview_is_scaled_down_with_its_points() -> None:
    from vexpress_model.conditioning.kps_images import draw_kps_preview

    kps = np.array([[[200.0, 200.0], [600.0, 200.0], [400.0, 500.0]]], np.float32)
    preview = draw_kps_preview(kps, 1024, 768, 256)
    assert preview.shape == (1, 192, 256, 3)
    np.testing.assert_array_equal(preview[0], draw_kps_image(192, 256, kps[0] / 4))
    assert draw_kps_preview(np.repeat(kps, 3, 0), 1024, 768, 256, long_sequence=2).shape == (3, 96, 128, 3)
    assert draw_kps_preview(kps / 8, 128, 96, 256).shape == (1, 96, 128, 3)  # never scaled up
    assert draw_kps_preview(kps, None, None, 256).shape == (1, 256, 256, 3)  # unknown size: 512 x 512
