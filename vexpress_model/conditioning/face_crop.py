"""Full-frame portraits, first half: where the square face crop lies, cutting it out, and kps in and out of it.

V-Express was trained on square, face-centred crops (the original's test samples are 512x512 head-and-shoulders
crops). For a photo of any size and aspect ratio the face is cut out as such a square, generated on, and pasted
back (``outputs/paste_back.py``). Everything here is in **source pixels** (the full image's own pixels) unless
it says otherwise.

The crop rule (:func:`plan_face_crop`), one rule for the reference image and for a driving video's first frame:

* **face size** from the three V-Kps points (eye, eye, nose tip): ``2 * max(eye distance, 1.5 * nose drop)``,
  where the nose drop is the nose tip's distance from the line through the eyes (it keeps the size steady when
  the head turns and the eyes move closer together in the picture); from a face box it is 0.83 x the box's
  longer side (the same size for the shipped portrait's MediaPipe box).
* **crop side** = ``crop_scale`` x face size; the default 3.4 reproduces the framing of the shipped
  face-centred portrait (``example_workflows/input/vexpress_portrait.jpg``), i.e. head, hair and shoulders.
  Smaller values zoom in on the face, larger ones take in more of the surroundings.
* **centre**: halfway between the eyes' midpoint and the nose tip, moved down by 35 % of the face size so that
  the chin and neck get a little more room than the hair, as in the training crops.
* **borders**: a crop reaching past the image edge is either padded (``border="pad"``, default: the edge
  pixels are repeated, and the face stays centred as in training) or shifted back inside the image
  (``border="shift"``; if the image is too small for the square, the square shrinks to the shorter side).

The crop is a whole-pixel square (:class:`FaceCrop`); it is resized to the model's size with OpenCV (area
filter when shrinking, Lanczos when enlarging). Keypoints map between source pixels and the pixels of the crop
at the generation size with :func:`kps_to_crop` / :func:`kps_from_crop` (pixel-centre convention, the same as
``cv2.resize``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from ..inputs.kps import KpsTrack
from ..options import CROP_BORDER_MODES

DEFAULT_CROP_SCALE = 3.4
MIN_CROP_SCALE = 1.0
MAX_CROP_SCALE = 8.0
CENTRE_DROP = 0.35  # crop centre below the face centre, in face sizes
NOSE_DROP_WEIGHT = 1.5
# A face box (MediaPipe's, a user's) is a little larger than the kps face size, and its centre a little lower
# than the kps face centre (measured on the shipped portrait): face size = 0.83 x box side, centre 0.06 face
# sizes above the box centre.
BOX_FACE_SIZE = 0.83
BOX_CENTRE_RAISE = 0.06
# No face in a whole photo: a tighter crop would not help (the photo is cut around the face), a visible face would.
FULL_FRAME_NO_FACE_HINT = "use a photo where the face is clearly visible and roughly frontal, or give its face box"
Border = Literal["pad", "shift"]


@dataclass(frozen=True)
class FaceCrop:
    """A square ``size`` x ``size`` crop at (``left``, ``top``) of a ``source_width`` x ``source_height`` image.

    Whole source pixels; the square may reach past the image edges (``border="pad"``), where the edge pixels
    are repeated. ``crop_scale`` is the rule's crop side in face sizes that planned it, so a driving track can be
    cut by the same rule (:func:`driving_track_for_crop`).
    """

    left: int
    top: int
    size: int
    source_width: int
    source_height: int
    crop_scale: float = DEFAULT_CROP_SCALE

    def __post_init__(self) -> None:
        if self.size <= 0 or self.source_width <= 0 or self.source_height <= 0:
            raise InputError(f"FaceCrop needs a positive size and source size, got {self}")

    @property
    def right(self) -> int:
        return self.left + self.size

    @property
    def bottom(self) -> int:
        return self.top + self.size

    def scaled(self, factor: float) -> FaceCrop:
        """The same crop in an image resized by ``factor`` (for an output with a maximum side)."""
        width = max(1, int(round(self.source_width * factor)))
        height = max(1, int(round(self.source_height * factor)))
        return FaceCrop(int(round(self.left * factor)), int(round(self.top * factor)),
                        max(1, int(round(self.size * factor))), width, height, self.crop_scale)

    def as_dict(self) -> dict[str, int]:
        return {"left": self.left, "top": self.top, "size": self.size, "source_width": self.source_width,
                "source_height": self.source_height}


def _check_kps(kps: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(kps, dtype=np.float64)
    if points.shape != (3, 2) or not np.isfinite(points).all():
        raise InputError(f"{name} must be three finite (x, y) points (eye, eye, nose tip), got shape {points.shape}")
    return points


def face_size_from_kps(kps: np.ndarray) -> float:
    """The face size in pixels from the three V-Kps points (see the module docstring)."""
    left_eye, right_eye, nose = _check_kps(kps, "face keypoints")
    eye_vector = right_eye - left_eye
    eye_distance = float(np.hypot(*eye_vector))
    if eye_distance > 0:
        offset = nose - left_eye
        nose_drop = abs(float(eye_vector[0] * offset[1] - eye_vector[1] * offset[0])) / eye_distance
    else:
        nose_drop = float(np.hypot(*(nose - left_eye)))
    return 2.0 * max(eye_distance, NOSE_DROP_WEIGHT * nose_drop)


def _face_centre_from_kps(kps: np.ndarray) -> np.ndarray:
    left_eye, right_eye, nose = _check_kps(kps, "face keypoints")
    return ((left_eye + right_eye) / 2.0 + nose) / 2.0


def check_crop_scale(crop_scale: float) -> float:
    """``crop_scale`` as a float; InputError unless it is a finite number in the allowed range."""
    if not (math.isfinite(crop_scale) and MIN_CROP_SCALE <= crop_scale <= MAX_CROP_SCALE):
        raise InputError(
            f"crop scale must be between {MIN_CROP_SCALE} and {MAX_CROP_SCALE} (crop side in face sizes), "
            f"got {crop_scale}; the default is {DEFAULT_CROP_SCALE}"
        )
    return float(crop_scale)


def _square(centre: np.ndarray, face_size: float, width: int, height: int, crop_scale: float,
            border: Border) -> FaceCrop:
    if border not in CROP_BORDER_MODES:
        raise InputError(f"border must be one of {', '.join(CROP_BORDER_MODES)}, got {border!r}")
    if face_size < 2.0:
        raise InputError(f"the face is too small to crop ({face_size:.1f} pixels); use a larger picture of the face")
    crop_scale = check_crop_scale(crop_scale)
    size = max(2, int(round(face_size * crop_scale)))
    centre_x, centre_y = float(centre[0]), float(centre[1] + CENTRE_DROP * face_size)
    if border == "shift":
        size = min(size, int(width), int(height))
    left = int(round(centre_x + 0.5 - size / 2.0))
    top = int(round(centre_y + 0.5 - size / 2.0))
    if border == "shift":
        left = min(max(left, 0), int(width) - size)
        top = min(max(top, 0), int(height) - size)
    return FaceCrop(left, top, size, int(width), int(height), crop_scale)


def plan_face_crop(
    kps: np.ndarray, width: int, height: int, *, crop_scale: float = DEFAULT_CROP_SCALE, border: Border = "pad"
) -> FaceCrop:
    """The square crop around a face given by its three V-Kps points in a ``width`` x ``height`` image."""
    return _square(_face_centre_from_kps(kps), face_size_from_kps(kps), width, height, crop_scale, border)


def check_face_box(box: Any, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The face box (x1, y1, x2, y2) as float64 [4]; :class:`InputError` unless it is four finite numbers with
    x2 > x1 and y2 > y1 and, given the image size, overlaps the ``width`` x ``height`` image and reaches at most
    half the image past its edges (further is a coordinate mistake: another image size, normalised units)."""
    try:
        values = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        values = np.zeros(0)
    if values.shape != (4,) or not np.isfinite(values).all() or values[2] <= values[0] or values[3] <= values[1]:
        raise InputError(f"a face box is x1,y1,x2,y2 with x2 > x1 and y2 > y1 (source pixels), got {_numbers(box)}")
    if width is None or height is None:
        return values
    size = np.array([width, height, width, height], dtype=np.float64)
    if values[2] <= 0 or values[3] <= 0 or values[0] >= width or values[1] >= height:
        raise InputError(f"the face box {_numbers(values)} lies outside the {width}x{height} image; give it in the "
                         "image's own pixels")
    if ((values < -size / 2) | (values > 1.5 * size)).any():
        raise InputError(f"the face box {_numbers(values)} reaches far outside the {width}x{height} image; give it "
                         "in the image's own pixels")
    return values


def _numbers(values: Any) -> str:
    """Numbers as the user writes them ("-50,-50,200,200"), not as numpy prints them ("np.float64(-50.0)")."""
    try:
        return ",".join(f"{float(value):g}" for value in np.asarray(values, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError):
        return repr(values)


def plan_box_crop(
    box: tuple[float, float, float, float] | np.ndarray, width: int, height: int, *,
    crop_scale: float = DEFAULT_CROP_SCALE, border: Border = "pad",
) -> FaceCrop:
    """The square crop around a face box (x1, y1, x2, y2) in source pixels (see ``BOX_FACE_SIZE``)."""
    values = check_face_box(box, width, height)
    face_size = BOX_FACE_SIZE * float(max(values[2] - values[0], values[3] - values[1]))
    centre = np.array([(values[0] + values[2]) / 2.0, (values[1] + values[3]) / 2.0 - BOX_CENTRE_RAISE * face_size])
    return _square(centre, face_size, width, height, crop_scale, border)


# ---------------------------------------------------------------------------------------- pixels and points


def crop_image(image: np.ndarray, crop: FaceCrop, width: int, height: int) -> np.ndarray:
    """The crop of an RGB uint8 image [H, W, 3] resized to ``width`` x ``height`` (edge pixels repeated outside)."""
    import cv2

    array = np.asarray(image)
    if array.shape[:2] != (crop.source_height, crop.source_width):
        raise InputError(f"the crop was planned for {crop.source_width}x{crop.source_height}, "
                         f"the image is {array.shape[1]}x{array.shape[0]}")
    pad = (max(0, -crop.top), max(0, crop.bottom - crop.source_height),
           max(0, -crop.left), max(0, crop.right - crop.source_width))
    if any(pad):
        array = cv2.copyMakeBorder(np.ascontiguousarray(array), *pad, cv2.BORDER_REPLICATE)
    top, left = crop.top + pad[0], crop.left + pad[2]
    square = array[top : top + crop.size, left : left + crop.size]
    shrinking = crop.size >= max(width, height)
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    return np.ascontiguousarray(cv2.resize(np.ascontiguousarray(square), (int(width), int(height)),
                                           interpolation=interpolation))


def kps_to_crop(points: np.ndarray, crop: FaceCrop, width: int, height: int) -> np.ndarray:
    """Source-pixel kps [..., 3, 2] -> pixels of the crop resized to ``width`` x ``height`` (float32)."""
    array = np.asarray(points, dtype=np.float64)
    scale = np.array([width / crop.size, height / crop.size])
    return ((array + 0.5 - [crop.left, crop.top]) * scale - 0.5).astype(np.float32)


def kps_from_crop(points: np.ndarray, crop: FaceCrop, width: int, height: int) -> np.ndarray:
    """The inverse of :func:`kps_to_crop`: crop pixels at ``width`` x ``height`` -> source pixels (float32)."""
    array = np.asarray(points, dtype=np.float64)
    scale = np.array([crop.size / width, crop.size / height])
    return ((array + 0.5) * scale - 0.5 + [crop.left, crop.top]).astype(np.float32)


def normalise_driving_track(
    track: KpsTrack, width: int, height: int, *, crop_scale: float = DEFAULT_CROP_SCALE
) -> tuple[KpsTrack, FaceCrop]:
    """A driving track in its video's own pixels -> the same motion in pixels of its own face crop.

    The crop is planned with the reference's rule on the track's **first frame** and kept for the whole clip,
    so the head moves inside it as it moved in the video; the result is in pixels of that crop resized to
    ``width`` x ``height``, ready for ``kps_for_frames``. A track without a frame size (the original ``.pth``
    format) works too: only its points are needed.
    """
    first = track.points[0]
    source_width = track.width or max(1, int(math.ceil(float(track.points[..., 0].max()) + 1)))
    source_height = track.height or max(1, int(math.ceil(float(track.points[..., 1].max()) + 1)))
    crop = plan_face_crop(first, source_width, source_height, crop_scale=crop_scale, border="pad")
    points = kps_to_crop(track.points, crop, width, height)
    return KpsTrack(points, fps=track.fps, width=int(width), height=int(height)), crop


def driving_track_for_crop(track: KpsTrack | None, crop: FaceCrop | None, width: int, height: int) -> KpsTrack | None:
    """The driving track for a reference cut out as ``crop`` (full-frame mode): normalised by the same rule and
    crop scale (:func:`normalise_driving_track`); unchanged without a crop or a track. The CLI's ``--full_frame``
    and the RetargetKps node both call this."""
    if track is None or crop is None:
        return track
    normalised, _ = normalise_driving_track(track, width, height, crop_scale=crop.crop_scale)
    return normalised


@dataclass(frozen=True)
class CroppedReference:
    """The reference image cut for generation: the ``crop`` in the full image, the cropped ``image`` (uint8
    [height, width, 3], the model's input) and the face's ``kps`` [3, 2] in the cropped image's pixels."""

    crop: FaceCrop
    image: np.ndarray
    kps: np.ndarray


def crop_reference(
    full_image: np.ndarray,
    width: int,
    height: int,
    *,
    kps: np.ndarray | None = None,
    box: tuple[float, float, float, float] | None = None,
    detector: Any = None,
    crop_scale: float = DEFAULT_CROP_SCALE,
    border: Border = "pad",
    select: str = "largest",
    name: str = "reference image",
    no_face_hint: str = FULL_FRAME_NO_FACE_HINT,
) -> CroppedReference:
    """Plan the crop and cut the reference: around ``kps`` (the image's own pixels), else around ``box`` (the
    kps are then detected in the crop), else around the face ``detector`` finds in the full image.
    ``no_face_hint`` ends the message when the detector finds no face (a front end adds its own flags)."""
    from ..inputs.face_detection import detect_reference_kps

    image = np.asarray(full_image)
    full_height, full_width = image.shape[:2]
    if kps is None and detector is None:
        raise InputError(f"the face in the {name} needs keypoints, a face box or a face detector to be cropped")
    if kps is None and box is not None:
        crop = plan_box_crop(box, full_width, full_height, crop_scale=crop_scale, border=border)
        cropped = crop_image(image, crop, width, height)
        crop_kps = detect_reference_kps(cropped, detector, select, name=f"face box of the {name}",
                                        hint=no_face_hint)
        return CroppedReference(crop, cropped, crop_kps.astype(np.float32))
    if kps is None:
        kps = detect_reference_kps(image, detector, select, name=name, hint=no_face_hint)
    crop = plan_face_crop(kps, full_width, full_height, crop_scale=crop_scale, border=border)
    return CroppedReference(crop, crop_image(image, crop, width, height), kps_to_crop(kps, crop, width, height))
