"""The reference portrait: a file or an array in, RGB uint8 ``[height, width, 3]`` at the target size out.

``compat="fixed"`` (default): the image is turned upright from its EXIF orientation, then scaled so that it
covers the target size **without changing its aspect ratio** and cropped to it around the centre
(Pillow ``ImageOps.fit``, Lanczos). A square, face-centred crop, as the model was trained on, is kept whole.

``compat="original"``: what the original ``inference.py`` and its pipeline do (docs/spec.md §4.3, §4.9):
``Image.open(path).convert("RGB").resize((height, width))`` -- Pillow's default bicubic filter, the
arguments in swapped order, the aspect ratio squashed, EXIF orientation ignored -- followed by the
pipeline's image processor, which resizes to ``(width, height)`` with Lanczos (a no-op for square sizes).

:func:`load_detection_image` gives the pixels the face detector sees: in fixed mode the same image, in
original mode what the original hands to insightface (``cv2.imread``, which does apply EXIF orientation, then
``cv2.resize`` to ``(width, height)``, bilinear).

Every image file is measured from its header before any pixel is decoded (:func:`image_file_size`): a file of
more than :data:`MAX_IMAGE_PIXELS` is refused in one line (a 45-byte PNG can claim 20000 x 20000 pixels and ask
for gigabytes once decoded).
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..options import check_compat
from ..validation import require_file

logger = logging.getLogger("vexpress.inputs")

ImageSource = str | Path | np.ndarray | Any  # a path, a numpy array, a CPU torch tensor, a PIL image

# The most pixels an image file may have: 64 megapixels (8192 x 8192, a 2:3 photo of 6688 x 10032). Larger
# pictures gain nothing (the face is generated at --image_width x --image_height) and a decoded one of Pillow's own
# limit takes gigabytes per copy; a file claiming more is refused from its header, before decoding.
MAX_IMAGE_PIXELS = 8192 * 8192
_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the picture by 90 degrees


def _too_large(name: str, path: Path, pixels: int, size: str) -> InputError:
    return InputError(
        f"{name} {path} is {size}{pixels / 1e6:.0f} megapixels, more than the {MAX_IMAGE_PIXELS / 1e6:.0f} "
        f"megapixels (8192x8192) this package reads; scale it down first (for example to 4096 pixels on the "
        "longer side, in any image editor)"
    )


def image_file_size(path: str | Path, name: str = "reference image") -> tuple[int, int]:
    """(width, height) of an image file as it is shown (the header's EXIF orientation applied), read from its
    header only; :class:`InputError` for a file that is not an image or has more than :data:`MAX_IMAGE_PIXELS`."""
    from PIL import Image, UnidentifiedImageError

    path = require_file(path, name, "check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, in our words
            with Image.open(path) as image:
                width, height = image.size
                exif_bytes = image.info.get("exif")
    except Image.DecompressionBombError as exc:
        # Pillow refuses twice its own limit before handing out the image; its message holds the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else 2 * int(Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS)
        raise _too_large(name, path, pixels, "") from None
    except UnidentifiedImageError:
        raise InputError(f"{name} {path} is not an image file Pillow can read; use a JPEG or PNG") from None
    except OSError as exc:
        raise InputError(f"{name} {path} cannot be read ({exc}); re-save it as JPEG or PNG") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_large(name, path, width * height, f"{width}x{height} pixels, ")
    if exif_bytes:
        exif = Image.Exif()
        try:
            exif.load(exif_bytes)
        except Exception:  # a damaged EXIF block: Pillow shows the picture as stored
            exif = Image.Exif()
        if exif.get(_EXIF_ORIENTATION) in _SWAPPING_ORIENTATIONS:
            width, height = height, width
    return int(width), int(height)


def _check_size(width: int, height: int) -> None:
    if int(width) <= 0 or int(height) <= 0:
        raise InputError(f"image size must be positive, got width {width} and height {height}")


def _array_to_uint8_rgb(value: Any, name: str) -> np.ndarray:
    """uint8 [H, W, 3] from an array-like: uint8 or float in [0, 1]; [H, W], [H, W, 1|3|4] or [1, H, W, C]."""
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim == 4:
        if array.shape[0] != 1:
            logger.warning("%s is a batch of %d images; using the first", name, array.shape[0])
        array = array[0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{name} must be an image array [H, W, 3] (or [1, H, W, 3]), got shape {array.shape}")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InputError(f"{name} contains NaN or infinite values")
        pixels = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    elif array.dtype.kind in "iub":
        pixels = np.clip(array, 0, 255).astype(np.uint8)
    else:
        raise InputError(f"{name} has unsupported element type {array.dtype}")
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def _open_pil(source: ImageSource, name: str, upright: bool) -> Any:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (str, Path)):
        path = require_file(source, name, "check the path")
        image_file_size(path, name)  # refuses an oversized file before its pixels are decoded
        try:
            image = Image.open(path)
            image.load()
        except UnidentifiedImageError:
            raise InputError(f"{name} {path} is not an image file Pillow can read; use a JPEG or PNG") from None
        except OSError as exc:
            raise InputError(f"{name} {path} cannot be read ({exc}); re-save it as JPEG or PNG") from None
        if upright:
            image = ImageOps.exif_transpose(image)
    else:
        image = Image.fromarray(_array_to_uint8_rgb(source, name))
    if image.width == 0 or image.height == 0:
        raise InputError(f"{name} is empty (0 pixels)")
    return image


def reference_image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file as it is shown (EXIF orientation applied)."""
    return image_file_size(path, "reference image")


def load_reference_image(
    source: ImageSource, width: int, height: int, compat: str = "fixed", *, name: str = "reference image"
) -> np.ndarray:
    """The reference image as RGB uint8 [height, width, 3] (see the module docstring for the two modes)."""
    from PIL import Image, ImageOps

    _check_size(width, height)
    if compat == "original":
        image = _open_pil(source, name, upright=False).convert("RGB")
        image = image.resize((int(height), int(width)))  # the original's swapped order, bicubic
        image = image.resize((int(width), int(height)), resample=Image.Resampling.LANCZOS)  # image processor
        return np.asarray(image, dtype=np.uint8).copy()
    check_compat(compat)
    image = _open_pil(source, name, upright=True).convert("RGB")
    if image.size != (int(width), int(height)):
        image = ImageOps.fit(image, (int(width), int(height)), method=Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8).copy()


def load_detection_image(
    source: ImageSource, width: int, height: int, compat: str = "fixed", *, name: str = "reference image"
) -> np.ndarray:
    """The pixels the face detector gets, RGB uint8 [height, width, 3] (see the module docstring)."""
    if compat != "original" or not isinstance(source, (str, Path)):
        return load_reference_image(source, width, height, compat, name=name)
    import cv2

    _check_size(width, height)
    path = require_file(source, name, "check the path")
    image_file_size(path, name)  # before OpenCV decodes it
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{name} {path} is not an image file OpenCV can read; use a JPEG or PNG")
    bgr = cv2.resize(bgr, (int(width), int(height)))
    return np.ascontiguousarray(bgr[:, :, ::-1])


def load_full_image(source: ImageSource, *, name: str = "reference image") -> np.ndarray:
    """The whole image at its own size, upright from its EXIF orientation: RGB uint8 [H, W, 3] (full-frame mode)."""
    image = _open_pil(source, name, upright=True).convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()
