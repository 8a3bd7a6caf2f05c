"""Reference image loading: the original's squashing resize (parity) and the fixed aspect-preserving crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vexpress_model.errors import InputError
from vexpress_model.inputs.image import load_detection_image, load_reference_image


@pytest.mark.parametrize("case", ["S1_fix_face", "S2_no_retarget"])
def test_original_mode_matches_the_recorded_image_tensor(parity_dir: Path, case: str) -> None:
    image = load_reference_image(parity_dir / "inputs" / "astronaut_256.jpg", 64, 64, compat="original")
    expected = np.load(parity_dir / "outputs" / case / "ref_image_tensor.npy")
    tensor = (image.astype(np.float32) / 255.0 * 2.0 - 1.0).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(tensor, expected)


def test_original_mode_is_pil_resize_with_swapped_arguments(tmp_path: Path, portrait_rgb: np.ndarray) -> None:
    path = tmp_path / "wide.png"
    Image.fromarray(portrait_rgb[100:300]).save(path)  # 512 x 200
    out = load_reference_image(path, 96, 64, compat="original")
    squashed = Image.open(path).convert("RGB").resize((64, 96))
    expected = np.asarray(squashed.resize((96, 64), resample=Image.Resampling.LANCZOS))
    assert out.shape == (64, 96, 3)
    np.testing.assert_array_equal(out, expected)


def test_fixed_mode_keeps_the_aspect_ratio(tmp_path: Path) -> None:
    """A 300 x 100 image of three colour bands: a square output shows only the centre band."""
    bands = np.zeros((100, 300, 3), np.uint8)
    bands[:, :100] = (255, 0, 0)
    bands[:, 100:200] = (0, 255, 0)
    bands[:, 200:] = (0, 0, 255)
    path = tmp_path / "bands.png"
    Image.fromarray(bands).save(path)
    out = load_reference_image(path, 64, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.abs(out[:, 2:-2].astype(int) - (0, 255, 0)).max() <= 2  # (the filter sees a little past the crop)
    assert out[:, :, 0].mean() < 2 and out[:, :, 2].mean() < 2
    squashed = load_reference_image(path, 64, 64, compat="original")
    assert squashed[:, :10, 0].mean() > 200  # the original squashes all three bands in


def test_fixed_mode_turns_exif_rotated_photos_upright(tmp_path: Path, portrait_rgb: np.ndarray) -> None:
    rotated = Image.fromarray(np.ascontiguousarray(np.rot90(portrait_rgb)))  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "sideways.jpg"
    rotated.save(path, exif=exif, quality=95)
    upright = load_reference_image(path, 128, 128)
    reference = load_reference_image(portrait_rgb, 128, 128)
    assert np.abs(upright.astype(int) - reference).mean() < 6


@pytest.mark.parametrize(
    "array",
    [
        np.full((40, 50, 3), 0.5, np.float32),
        np.full((1, 40, 50, 3), 0.5, np.float32),  # a ComfyUI IMAGE batch
        np.full((40, 50), 128, np.uint8),
        np.full((40, 50, 4), 128, np.uint8),
    ],
)
def test_arrays_are_accepted(array: np.ndarray) -> None:
    out = load_reference_image(array, 32, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - 128).max() <= 1


def test_torch_tensor(portrait_rgb: np.ndarray) -> None:
    import torch

    tensor = torch.from_numpy(portrait_rgb.astype(np.float32) / 255.0)[None]
    out = load_reference_image(tensor, 512, 512)
    np.testing.assert_array_equal(out, portrait_rgb)


def test_detection_image(parity_dir: Path) -> None:
    import cv2

    path = parity_dir / "inputs" / "astronaut_256.jpg"
    original = load_detection_image(path, 64, 64, compat="original")
    expected = cv2.resize(cv2.imread(str(path)), (64, 64))[:, :, ::-1]
    np.testing.assert_array_equal(original, expected)
    np.testing.assert_array_equal(load_detection_image(path, 64, 64), load_reference_image(path, 64, 64))


def test_bad_images(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_reference_image(tmp_path / "missing.jpg", 64, 64)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a picture")
    for compat in ("fixed", "original"):
        with pytest.raises(InputError, match="not an image"):
            load_reference_image(garbage, 64, 64, compat)
    with pytest.raises(InputError, match="not an image"):
        load_detection_image(garbage, 64, 64, "original")
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(InputError, match="reference image"):
        load_reference_image(truncated, 64, 64)
    with pytest.raises(InputError, match="shape"):
        load_reference_image(np.zeros((3, 4, 5, 6, 7)), 64, 64)
    with pytest.raises(InputError, match="NaN"):
        load_reference_image(np.full((8, 8, 3), np.nan, np.float32), 64, 64)
    with pytest.raises(InputError, match="positive"):
        load_reference_image(np.zeros((8, 8, 3), np.uint8), 0, 64)


@pytest.mark.parametrize(("width", "height", "says"), [
    (20000, 20000, "is 400 megapixels"),  # over twice Pillow's own limit: Pillow refuses it as a bomb
    (9000, 8000, "is 9000x8000 pixels, 72 megapixels"),  # over ours, under Pillow's
])
def test_an_oversized_image_is_refused_from_its_header(tmp_path: Path, width: int, height: int, says: str) -> None:
    """The files hold no pixel data at all: decoding would fail with another message, so these messages show the
    size was refused from the header, before any decoding."""
    from tests.media import png_header_only
    from vexpress_model.inputs.image import load_full_image, reference_image_size

    path = png_header_only(tmp_path / "huge.png", width, height)
    assert path.stat().st_size == 45
    for load in (lambda: load_reference_image(path, 64, 64), lambda: load_reference_image(path, 64, 64, "original"),
                 lambda: load_detection_image(path, 64, 64, "original"), lambda: load_full_image(path),
                 lambda: reference_image_size(path)):
        with pytest.raises(InputError) as refused:
            load()
        assert str(refused.value) == (
            f"reference image {path} {says}, more than the 67 megapixels (8192x8192) this package reads; scale it "
            "down first (for example to 4096 pixels on the longer side, in any image editor)")


def test_image_size_from_the_header_follows_the_exif_orientation(tmp_path: Path) -> None:
    from vexpress_model.inputs.image import image_file_size

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    Image.fromarray(np.zeros((40, 100, 3), np.uint8)).save(tmp_path / "turned.jpg", exif=exif)
    from PIL import ImageOps

    assert image_file_size(tmp_path / "turned.jpg") == (40, 100)
    assert ImageOps.exif_transpose(Image.open(tmp_path / "turned.jpg")).size == (40, 100)  # as Pillow shows it
