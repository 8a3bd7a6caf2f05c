"""Which face detector runs: insightface (the original's, non-commercial weights) or MediaPipe (licence-clean,
weights inside the wheel).

``backend="auto"`` (default) takes insightface where it can run -- the package imports **and** ``det_10g.onnx``
is present under the insightface root -- for fidelity with the original; otherwise MediaPipe when it is
installed; otherwise, with neither package installed, it says in one line how to get either
(:data:`NO_DETECTOR`). ``"insightface"`` / ``"mediapipe"`` force one. Neither package
is needed to import the library or to run anything that does not detect faces.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..errors import MissingPackageError, ModelFolderError
from ..options import FACE_DETECTORS, check_choice
from .face_detection import FaceDetector, find_detector_model
from .face_mediapipe import INSTALL_HINT, MediaPipeFaceDetector, mediapipe_available

NO_DETECTOR = (
    f"no face detector is installed: {INSTALL_HINT} (Python 3.10-3.12), or pip install insightface onnxruntime "
    "(builds with a C++ compiler; its det_10g.onnx model goes into the insightface model folder)"
)


def insightface_ready(root: str | Path | None) -> bool:
    """Whether insightface imports and its detector model is under ``root``."""
    if root is None:
        return False
    try:
        find_detector_model(root)
    except ModelFolderError:
        return False
    try:
        import insightface  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, insightface_root: str | Path | None) -> str:
    """``"insightface"`` or ``"mediapipe"`` for a requested backend (see the module docstring)."""
    if check_choice(backend, FACE_DETECTORS, "face detector") != "auto":
        return backend
    if insightface_ready(insightface_root):
        return "insightface"
    if mediapipe_available():
        return "mediapipe"
    if importlib.util.find_spec("insightface") is None:
        raise MissingPackageError(NO_DETECTOR)
    return "insightface"  # its error message says where the model goes and how to get it


def create_face_detector(
    backend: str = "auto",
    insightface_root: str | Path | None = None,
    *,
    device: str = "auto",
    gpu_id: int = 0,
    quiet_native_logs: bool = False,
) -> Any:
    """A face detector (``detect_faces(image) -> [DetectedFace]``, ``close()``, a context manager).

    ``quiet_native_logs``: hide MediaPipe's native start-up log lines (``face_mediapipe``); for command lines only,
    since it briefly points the process's file descriptor 2 at the null device."""
    chosen = resolve_backend(backend, insightface_root)
    if chosen == "mediapipe":
        return MediaPipeFaceDetector(quiet_native_logs=quiet_native_logs)
    if insightface_root is None:
        raise ModelFolderError(
            "no insightface model folder was given and mediapipe is not installed; give the insightface root "
            f"(holding models/buffalo_l/det_10g.onnx) or {INSTALL_HINT}"
        )
    return FaceDetector(insightface_root, device=device, gpu_id=gpu_id)
