"""Full-frame portraits: the crop plan, kps into and out of the crop, the feathered paste-back (library level)."""

from __future__ import annotations

import numpy as np
import pytest

from vexpress_model.conditioning.face_crop import (
    FaceCrop,
    crop_image,
    crop_reference,
    driving_track_for_crop,
    face_size_from_kps,
    kps_from_crop,
    kps_to_crop,
    normalise_driving_track,
    plan_box_crop,
    plan_face_crop,
)
from vexpress_model.errors import InputError
from vexpress_model.inputs.kps import KpsTrack
from vexpress_model.outputs.paste_back import PasteBack, feather_mask, output_size, paste_back_chunks

# Hand-placed on the 512x512 astronaut photo (pupil centres, nose tip): see tests/test_inputs_face_mediapipe.py.
ASTRONAUT_KPS = np.array([[203.0, 101.0], [246.0, 103.5], [224.0, 127.0]], dtype=np.float32)
SHIPPED_PORTRAIT_BOX = (79, 0, 290)  # scripts/make_example_inputs.py CROP_BOX: left, top, side


def test_default_crop_reproduces_the_shipped_portrait_framing() -> None:
    crop = plan_face_crop(ASTRONAUT_KPS, 512, 512)
    left, top, side = SHIPPED_PORTRAIT_BOX
    assert abs(crop.size - side) <= 0.03 * side
    assert abs(crop.left - left) <= 6 and abs(crop.top - top) <= 6


def test_crop_scale_zooms_and_border_modes() -> None:
    tight = plan_face_crop(ASTRONAUT_KPS, 512, 512, crop_scale=2.0)
    assert tight.size == round(2.0 * face_size_from_kps(ASTRONAUT_KPS))
    # Near the top-left corner: pad keeps the square centred on the face, shift moves it inside the image.
    corner = ASTRONAUT_KPS - [150, 90]
    padded = plan_face_crop(corner, 512, 512, border="pad")
    shifted = plan_face_crop(corner, 512, 512, border="shift")
    assert padded.left < 0 and padded.top < 0
    assert (shifted.left, shifted.top) == (0, 0) and shifted.size == padded.size
    small = plan_face_crop(ASTRONAUT_KPS, 200, 150, border="shift")
    assert small.size == 150 and 0 <= small.left <= 50 and small.top == 0
    with pytest.raises(InputError, match="crop scale"):
        plan_face_crop(ASTRONAUT_KPS, 512, 512, crop_scale=float("nan"))
    with pytest.raises(InputError, match="face box"):
        plan_box_crop((10, 10, 5, 20), 512, 512)


def test_kps_round_trip_and_crop_pixels(portrait_rgb: np.ndarray) -> None:
    crop = plan_face_crop(ASTRONAUT_KPS, 512, 512, border="pad")
    inside = kps_to_crop(ASTRONAUT_KPS, crop, 512, 512)
    np.testing.assert_allclose(kps_from_crop(inside, crop, 512, 512), ASTRONAUT_KPS, atol=1e-3)
    # A point maps to the pixel showing the same thing: crop at the crop's own size (no resampling).
    cut = crop_image(portrait_rgb, crop, crop.size, crop.size)
    x, y = np.rint(kps_to_crop(ASTRONAUT_KPS, crop, crop.size, crop.size)[0]).astype(int)
    sx, sy = np.rint(ASTRONAUT_KPS[0]).astype(int)
    np.testing.assert_array_equal(cut[y, x], portrait_rgb[sy, sx])
    # Padding repeats the edge rows above the image.
    assert crop.top < 0
    np.testing.assert_array_equal(cut[0, 10], portrait_rgb[0, crop.left + 10])
    np.testing.assert_array_equal(cut[-crop.top, 10], portrait_rgb[0, crop.left + 10])


def test_crop_reference_with_given_kps(portrait_rgb: np.ndarray) -> None:
    wide = np.zeros((600, 1000, 3), np.uint8)
    wide[50:562, 400:912] = portrait_rgb
    kps = ASTRONAUT_KPS + [400, 50]
    cropped = crop_reference(wide, 256, 256, kps=kps)
    assert cropped.image.shape == (256, 256, 3)
    np.testing.assert_allclose(cropped.kps, kps_to_crop(kps, cropped.crop, 256, 256))
    # Same framing as the crop of the square portrait: the face lands on the same crop pixels.
    alone = crop_reference(portrait_rgb, 256, 256, kps=ASTRONAUT_KPS)
    np.testing.assert_allclose(cropped.kps, alone.kps, atol=0.5)


def test_driving_track_is_normalised_by_its_own_first_frame() -> None:
    points = np.stack([ASTRONAUT_KPS * 2 + [300 + 5 * t, 100] for t in range(4)])
    track = KpsTrack(points, fps=25.0, width=1920, height=1080)
    normalised, crop = normalise_driving_track(track, 512, 512)
    reference = crop_reference(np.zeros((512, 512, 3), np.uint8), 512, 512, kps=ASTRONAUT_KPS)
    # The first frame's face lands where the reference's face lands (same rule, same framing).
    np.testing.assert_allclose(normalised.points[0], reference.kps, atol=2.0)
    # The motion is kept, scaled into crop pixels.
    np.testing.assert_allclose(normalised.points[3, :, 0] - normalised.points[0, :, 0], 15 * 512 / crop.size, atol=1e-3)
    assert (normalised.width, normalised.height, normalised.fps) == (512, 512, 25.0)


def test_driving_track_for_crop_uses_the_crops_own_scale() -> None:
    points = np.stack([ASTRONAUT_KPS * 2 + [300 + 5 * t, 100] for t in range(3)])
    track = KpsTrack(points, fps=25.0, width=1920, height=1080)
    crop = plan_face_crop(ASTRONAUT_KPS, 512, 512, crop_scale=2.0)
    assert crop.crop_scale == 2.0 and crop.scaled(0.5).crop_scale == 2.0
    expected, _ = normalise_driving_track(track, 256, 256, crop_scale=2.0)
    np.testing.assert_array_equal(driving_track_for_crop(track, crop, 256, 256).points, expected.points)
    default, _ = normalise_driving_track(track, 256, 256)
    assert np.abs(expected.points - default.points).max() > 10  # a different crop scale, a different normalisation
    assert driving_track_for_crop(track, None, 256, 256) is track
    assert driving_track_for_crop(None, crop, 256, 256) is None


def test_feather_mask_shape() -> None:
    crop = FaceCrop(100, 50, 200, 640, 360)
    mask = feather_mask(crop, 0.1)
    assert mask.shape == (200, 200)
    assert mask[100, 100] == 1.0 and mask[0, 100] < 0.01 and mask[100, -1] < 0.01
    assert np.all(np.diff(mask[100, :20]) >= 0)
    # An edge on the image border gets no ramp.
    at_border = feather_mask(FaceCrop(0, 0, 200, 640, 360), 0.1)
    assert at_border[0, 100] == 1.0 and at_border[100, 0] == 1.0 and at_border[-1, 100] < 0.01
    assert np.all(feather_mask(crop, 0.0) == 1.0)


def test_paste_back_keeps_outside_and_places_the_crop() -> None:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (361, 641, 3), dtype=np.uint8)  # odd sizes: output is cut to even
    crop = FaceCrop(300, 60, 200, 641, 361)
    paster = PasteBack(reference, crop, feather=0.1, color_match="off")
    assert paster.size == (640, 360)
    generated = np.full((3, 64, 64, 3), 200, np.uint8)
    frames = paster.paste(generated)
    assert frames.shape == (3, 360, 640, 3)
    outside = np.ones((360, 640), bool)
    outside[60:260, 300:500] = False
    np.testing.assert_array_equal(frames[1][outside], reference[:360, :640][outside])
    np.testing.assert_array_equal(frames[2][100:220, 340:460], 200)  # the untouched inside of the mask
    chunks = list(paste_back_chunks(iter([generated[:2], generated[2:]]), paster, chunk_frames=1))
    assert [len(c) for c in chunks] == [1, 1, 1]


def test_colour_match_moves_the_crop_to_the_reference_colours() -> None:
    reference = np.zeros((300, 400, 3), np.uint8)
    reference[:] = (180, 120, 90)
    reference[::2] = (170, 110, 80)
    crop = FaceCrop(100, 50, 200, 400, 300)
    tinted = np.zeros((2, 64, 64, 3), np.uint8)
    tinted[:] = (120, 160, 200)
    tinted[:, ::2] = (110, 150, 190)
    for mode in ("clip", "frame"):
        frames = PasteBack(reference, crop, color_match=mode).paste(tinted)
        centre = frames[:, 120:180, 170:230].reshape(-1, 3).mean(axis=0)
        assert np.abs(centre - reference[120:180, 170:230].reshape(-1, 3).mean(axis=0)).max() < 4


def test_output_size_and_max_side() -> None:
    assert output_size(1921, 1081, None) == (1920, 1080, 1.0)
    width, height, scale = output_size(1920, 1080, 1280)
    assert (width, height) == (1280, 720) and scale == pytest.approx(2 / 3)
    reference = np.zeros((1080, 1920, 3), np.uint8)
    paster = PasteBack(reference, FaceCrop(1200, 200, 400, 1920, 1080), max_side=960)
    assert paster.size == (960, 540) and paster.crop == FaceCrop(600, 100, 200, 960, 540)
    with pytest.raises(InputError, match="crop belongs to"):
        PasteBack(reference[:500], FaceCrop(0, 0, 100, 1920, 1080))
