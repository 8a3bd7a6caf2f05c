"""Face keypoints with insightface: the reference kps of a portrait and kps tracks of driving videos.

Only the detection model of insightface's ``buffalo_l`` pack is used (``det_10g.onnx``, SCRFD-10G, which
also predicts 5 keypoints); the recognition, landmark and attribute models the original loads with
``FaceAnalysis`` are never touched. The file is loaded through insightface's ``model_zoo.get_model``, which
identifies it as an SCRFD detector and decodes its outputs; nothing is ever downloaded.

Where the model goes (``root`` is ``--insightface_model_path``, default ``./model_ckpts/insightface_models``)::

    <root>/models/buffalo_l/det_10g.onnx

(``<root>/buffalo_l/det_10g.onnx``, ``<root>/det_10g.onnx`` or the file itself are accepted too.)

Per image the detector returns every face. Which one is used (:func:`choose_face`, the same rule for the command
line, ExtractKps and the reference image): ``"largest"`` (the largest box; the default for a single image),
``"score"`` (the most confident one, which is what the original's ``faces[0]`` is) or ``"nearest"`` (in a video:
the face nearest the face chosen in the previous frame, the largest in the first frame -- a second face walking
into the picture does not steal the track; the default for driving videos). Keypoints are the first three of
insightface's five: eye on the image left, eye on the image right, nose tip, in pixels.

In a video, frames without a face are filled from their neighbours (linear in between, held at the ends) and a
warning names how many and which frames; only a video without any face is an error. A second backend,
MediaPipe, lives in ``face_mediapipe.py``; ``face_backends.py`` picks one.

Images are RGB uint8 ``[H, W, 3]`` here (insightface itself wants BGR; the conversion is internal). The
detector input is the image's own size rounded up to a multiple of 32 (SCRFD's largest stride) unless
``det_size`` is given, so a 512x512 image is searched at 512x512 like the original.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FaceNotFoundError, InputError, ModelFolderError, VExpressError
from ..options import FACE_SELECTIONS, FaceSelection, check_choice
from .kps import KpsTrack
from .video import iter_video_frames, probe_video

logger = logging.getLogger("vexpress.inputs")

DETECTOR_FILE = "det_10g.onnx"
MODEL_PACK = "buffalo_l"
DEFAULT_INSIGHTFACE_ROOT = "./model_ckpts/insightface_models"
DOWNLOAD_HINT = (
    "download buffalo_l.zip from the insightface model zoo "
    "(https://github.com/deepinsight/insightface/releases/download/model-zoo/buffalo_l.zip) and unzip it so that "
    "{path} exists (only det_10g.onnx is needed)"
)

# What to do when a portrait shows no face, in the library's words (no flag names: a front end passes its own hint,
# e.g. the command line adds its --reference_kps_path, the full-frame path its own advice).
NO_FACE_HINT = "use a portrait with a clearly visible, roughly frontal face (a square, face-centred crop works best)"

Selection = FaceSelection
ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class DetectedFace:
    """One detection: ``box`` (x1, y1, x2, y2), ``score``, ``kps`` float32 [5, 2] (pixels of the input image)."""

    box: np.ndarray
    score: float
    kps: np.ndarray

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def find_detector_model(root: str | Path) -> Path:
    """The ``det_10g.onnx`` under an insightface root (see the module docstring); ModelFolderError if absent."""
    root = Path(root).expanduser()
    candidates = [
        root / "models" / MODEL_PACK / DETECTOR_FILE,
        root / MODEL_PACK / DETECTOR_FILE,
        root / DETECTOR_FILE,
    ]
    if root.suffix == ".onnx":
        candidates.insert(0, root)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    expected = candidates[-3]
    raise ModelFolderError(
        f"the face detector model is missing: {expected} not found (insightface model path {root}); "
        + DOWNLOAD_HINT.format(path=expected)
    )


def _providers(device: str, gpu_id: int) -> list[Any]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": int(gpu_id)}), "CPUExecutionProvider"]
    if device == "cuda":
        logger.warning("onnxruntime has no CUDA provider here (install onnxruntime-gpu); detecting faces on the CPU")
    return ["CPUExecutionProvider"]


def _round_up(value: int, multiple: int = 32) -> int:
    return max(multiple, -(-int(value) // multiple) * multiple)


class FaceDetector:
    """insightface's SCRFD detector (``buffalo_l/det_10g.onnx``) on ONNX Runtime, CUDA when available."""

    name = "insightface"

    def __init__(
        self,
        root: str | Path = DEFAULT_INSIGHTFACE_ROOT,
        *,
        device: str = "auto",
        gpu_id: int = 0,
        det_size: tuple[int, int] | None = None,
        det_thresh: float = 0.5,
    ) -> None:
        model_path = find_detector_model(root)
        try:
            from insightface.model_zoo import get_model
        except ImportError as exc:
            raise VExpressError(
                f"insightface cannot be imported ({exc}); install it (pip install insightface), or use MediaPipe "
                "(--face_detector mediapipe)"
            ) from None
        hint = DOWNLOAD_HINT.format(path=model_path)
        try:
            model = get_model(str(model_path), providers=_providers(device, gpu_id))
        except Exception as exc:
            reason = " ".join(str(exc).split())[:300]
            raise ModelFolderError(f"the face detector {model_path} cannot be loaded ({reason}); {hint}") from None
        if model is None or getattr(model, "taskname", None) != "detection":
            raise ModelFolderError(f"{model_path} is not a face detection model; {hint}")
        self.model_path = model_path
        self._model = model
        self._det_size = det_size
        self._det_thresh = float(det_thresh)
        self._prepared_size: tuple[int, int] | None = None

    def detect_faces(self, image: np.ndarray) -> list[DetectedFace]:
        """Every face in an RGB uint8 image [H, W, 3], most confident first."""
        frame = check_image(image)
        size = self._det_size or (_round_up(frame.shape[1]), _round_up(frame.shape[0]))
        if size != self._prepared_size:
            self._model.prepare(0, input_size=size, det_thresh=self._det_thresh)
            self._prepared_size = size
        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        boxes, keypoints = self._model.detect(bgr, input_size=size)
        if keypoints is None:
            raise ModelFolderError(f"{self.model_path} predicts no keypoints; use det_10g.onnx of buffalo_l")
        return [
            DetectedFace(np.asarray(box[:4], np.float32), float(box[4]), np.asarray(kps, np.float32))
            for box, kps in zip(boxes, keypoints)
        ]

    def detect_kps(self, image: np.ndarray, select: Selection = "largest") -> np.ndarray | None:
        """The chosen face's kps [3, 2] (float32) in an RGB uint8 image, or None if there is no face."""
        return detect_kps(self, image, select)

    def close(self) -> None:
        """Release the ONNX Runtime session."""
        self._model = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_image(image: np.ndarray) -> np.ndarray:
    """The image as an RGB uint8 array [H, W, 3]; ValueError otherwise."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or 0 in array.shape:
        raise InputError(f"images for face detection must be RGB uint8 [H, W, 3], got {array.dtype} {array.shape}")
    return array


def choose_face(
    faces: list[DetectedFace], select: Selection = "largest", previous: np.ndarray | None = None
) -> DetectedFace | None:
    """The face to use among ``faces`` by the rule ``select`` (see the module docstring); None if there is none.

    ``previous`` is the kps [3, 2] chosen in the previous frame (for ``"nearest"``; without it, the largest).
    """
    check_choice(select, FACE_SELECTIONS, "select")
    if not faces:
        return None
    if select == "score":
        return max(faces, key=lambda f: f.score)
    if select == "nearest" and previous is not None:
        centre = np.asarray(previous, np.float64).mean(axis=0)
        return min(faces, key=lambda f: float(np.hypot(*(f.kps[:3].mean(axis=0) - centre))))
    return max(faces, key=lambda f: (f.area, f.score))


def detect_kps(
    detector: Any, image: np.ndarray, select: Selection = "largest", previous: np.ndarray | None = None
) -> np.ndarray | None:
    """The chosen face's kps [3, 2] (float32) from any detector with ``detect_faces``; None if there is no face."""
    face = choose_face(detector.detect_faces(image), select, previous)
    return None if face is None else np.asarray(face.kps[:3], np.float32).copy()


def reference_face_selection(compat: str) -> Selection:
    """Which face of the reference image to use: the original takes insightface's first face (the highest
    score); the fixed mode takes the largest, which is the portrait's subject when a background face scores high."""
    return "score" if compat == "original" else "largest"


def reference_kps_from_image(
    image: str | Path | np.ndarray,
    width: int,
    height: int,
    compat: str,
    open_detector: Callable[[], Any],
    *,
    name: str = "reference image",
    no_face_hint: str = NO_FACE_HINT,
) -> np.ndarray:
    """The reference kps [3, 2] in pixels of the ``width`` x ``height`` output frame, detected on the portrait as
    the pipeline sees it (``inputs.image.load_detection_image``) with the face rule of ``compat``;
    ``no_face_hint`` ends the message when there is no face (see :func:`detect_reference_kps`).

    ``open_detector()`` gives a detector used as a context manager (each front end opens its own kind, from its
    own folders); it is closed as soon as the kps are found, since its ONNX session holds device memory the
    denoising UNet can use.
    """
    from .image import load_detection_image

    detection_image = load_detection_image(image, width, height, compat)
    with open_detector() as detector:
        return detect_reference_kps(detection_image, detector, reference_face_selection(compat), name=name,
                                    hint=no_face_hint)


def detect_reference_kps(
    image: np.ndarray,
    detector: Any,
    select: Selection = "largest",
    *,
    name: str = "reference image",
    hint: str = NO_FACE_HINT,
) -> np.ndarray:
    """The reference kps [3, 2] of a portrait (RGB uint8, any size); FaceNotFoundError if none, saying
    "no face was found in the {name}; {hint}" (the caller knows what advice fits: a crop, a full photo, a flag)."""
    kps = detect_kps(detector, image, select)
    if kps is None:
        raise FaceNotFoundError(f"no face was found in the {name}; {hint}")
    return kps


def fill_missing(points: list[np.ndarray | None]) -> tuple[np.ndarray, int]:
    """[T, 3, 2] with frames lacking kps filled from their neighbours (linear in between, nearest at the ends).

    Returns the filled array and the number of frames that were filled; FaceNotFoundError if all are missing.
    """
    found = [index for index, value in enumerate(points) if value is not None]
    if not found:
        raise FaceNotFoundError("no face was found in any frame")
    known = np.stack([points[index] for index in found]).astype(np.float64)
    positions = np.arange(len(points), dtype=np.float64)
    flat = known.reshape(len(found), -1)
    filled = np.stack([np.interp(positions, found, flat[:, column]) for column in range(flat.shape[1])], axis=1)
    return filled.reshape(len(points), 3, 2).astype(np.float32), len(points) - len(found)


def extract_kps_track(
    source: str | Path | np.ndarray | Iterable[np.ndarray],
    detector: Any,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    select: Selection = "nearest",
    progress: ProgressCallback | None = None,
) -> KpsTrack:
    """A kps track from a video file or RGB uint8 frames ([T, H, W, 3] or an iterable of [H, W, 3]).

    With ``width`` and ``height`` every frame is first resized to that size (``cv2.resize``, bilinear, the
    aspect ratio not kept -- like the original script) and the kps are in those pixels; otherwise in the
    source frame's pixels. The track keeps the source fps (from the file; ``fps`` for frames). ``detector``
    is any backend with ``detect_faces`` (insightface or MediaPipe); ``select`` picks among several faces
    (:func:`choose_face`). Frames without a face are filled from their neighbours and named in a warning.
    """
    if (width is None) != (height is None):
        raise InputError("give both width and height, or neither")
    total = None
    if isinstance(source, (str, Path)):
        info = probe_video(source)
        fps = info.fps if fps is None else fps
        total = info.num_frames
        frames: Iterable[np.ndarray] = iter_video_frames(source)
        name = f"video {source}"
    else:
        frames = source
        total = len(source) if hasattr(source, "__len__") else None
        name = "the frames"
    points: list[np.ndarray | None] = []
    size = None
    previous = None
    for frame in frames:
        frame = _resize(check_image(frame), width, height)
        size = (frame.shape[1], frame.shape[0])
        kps = detect_kps(detector, frame, select, previous)
        previous = kps if kps is not None else previous
        points.append(kps)
        if progress is not None:
            progress(len(points), total)
    if not points:
        raise InputError(f"{name} has no frames")
    try:
        filled, missing = fill_missing(points)
    except FaceNotFoundError:
        raise FaceNotFoundError(
            f"no face was found in any of the {len(points)} frames of {name}; use a video showing one face clearly"
        ) from None
    if missing:
        where = describe_frames([index for index, value in enumerate(points) if value is None])
        logger.warning("%d of %d frames of %s had no face (%s); their kps were filled from neighbouring frames",
                       missing, len(points), name, where)
    return KpsTrack(filled, fps=fps, width=size[0], height=size[1])


def describe_frames(indices: list[int], limit: int = 8) -> str:
    """Frame numbers as short ranges, e.g. ``"frames 0-2, 17, 40-41"`` (at most ``limit`` ranges, then "...")."""
    ranges: list[list[int]] = []
    for index in indices:
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    more = ", ..." if len(ranges) > limit else ""
    return ("frame " if len(indices) == 1 else "frames ") + ", ".join(parts) + more


def _resize(frame: np.ndarray, width: int | None, height: int | None) -> np.ndarray:
    if width is None or (frame.shape[1], frame.shape[0]) == (width, height):
        return frame
    import cv2

    return cv2.resize(frame, (int(width), int(height)))
