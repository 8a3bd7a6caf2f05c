"""Face detection through insightface's own SCRFD loading and decoding, on a generated stand-in det_10g.onnx."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.fake_detector import DEFAULT_FACE, SMALL_CONFIDENT_FACE, write_fake_buffalo_l
from vexpress_model.errors import FaceNotFoundError, InputError, ModelFolderError
from vexpress_model.inputs.face_detection import (
    FaceDetector,
    detect_reference_kps,
    extract_kps_track,
    fill_missing,
    find_detector_model,
)
from vexpress_model.inputs.video import probe_video
from vexpress_model.outputs.video import write_video


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt by insightface to download a model fails the test."""
    import importlib

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"insightface tried to download: {args}")

    for name in ("insightface.utils.download", "insightface.utils.storage"):
        monkeypatch.setattr(importlib.import_module(name), "download_file", refuse)


@pytest.fixture(scope="module")
def two_faces_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("insightface_two")
    write_fake_buffalo_l(root, (DEFAULT_FACE, SMALL_CONFIDENT_FACE))
    return root


@pytest.fixture(scope="module")
def detector(insightface_root: Path) -> FaceDetector:
    return FaceDetector(insightface_root, device="cpu")


@pytest.mark.parametrize("size", [(512, 512), (64, 64), (96, 64)])
def test_reference_kps_of_a_portrait(detector: FaceDetector, portrait_rgb: np.ndarray, size: tuple[int, int]) -> None:
    import cv2

    image = cv2.resize(portrait_rgb, size)
    kps = detect_reference_kps(image, detector)
    assert kps.shape == (3, 2) and kps.dtype == np.float32
    np.testing.assert_allclose(kps, DEFAULT_FACE.absolute_kps(*size)[:3], atol=2e-3)


def test_largest_face_by_default_most_confident_as_an_option(two_faces_root: Path, portrait_rgb: np.ndarray) -> None:
    detector = FaceDetector(two_faces_root, device="cpu")
    faces = detector.detect_faces(portrait_rgb)
    assert [round(f.score, 2) for f in faces] == [0.97, 0.9]
    np.testing.assert_allclose(detector.detect_kps(portrait_rgb), DEFAULT_FACE.absolute_kps(512, 512)[:3], atol=2e-3)
    np.testing.assert_allclose(
        detector.detect_kps(portrait_rgb, "score"), SMALL_CONFIDENT_FACE.absolute_kps(512, 512)[:3], atol=2e-3
    )


def test_no_face_in_the_reference(detector: FaceDetector) -> None:
    """The library's advice names no flag (the nodes have none); a front end passes its own hint."""
    with pytest.raises(FaceNotFoundError) as info:
        detect_reference_kps(np.zeros((64, 64, 3), np.uint8), detector)
    assert str(info.value) == ("no face was found in the reference image; use a portrait with a clearly visible, "
                               "roughly frontal face (a square, face-centred crop works best)")
    with pytest.raises(FaceNotFoundError) as info:
        detect_reference_kps(np.zeros((64, 64, 3), np.uint8), detector, name="photo", hint="try another photo")
    assert str(info.value) == "no face was found in the photo; try another photo"


def test_missing_detector_model(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError) as info:
        FaceDetector(tmp_path / "insightface_models")
    message = str(info.value)
    assert str(tmp_path / "insightface_models" / "models" / "buffalo_l" / "det_10g.onnx") in message
    assert "buffalo_l.zip" in message and "\n" not in message
    assert not any(tmp_path.rglob("*"))  # nothing was downloaded or created


def test_broken_detector_model(tmp_path: Path) -> None:
    path = tmp_path / "models" / "buffalo_l" / "det_10g.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx file")
    with pytest.raises(ModelFolderError, match="cannot be loaded"):
        FaceDetector(tmp_path)


def test_model_locations(insightface_root: Path) -> None:
    model = insightface_root / "models" / "buffalo_l" / "det_10g.onnx"
    assert find_detector_model(insightface_root) == model
    assert find_detector_model(model.parent) == model
    assert find_detector_model(model) == model


def test_frames_without_a_face_are_filled(detector: FaceDetector, portrait_rgb: np.ndarray, caplog) -> None:
    frames = np.stack([portrait_rgb[::8, ::8]] * 6)  # 64x64
    frames[0] = 0
    frames[3] = 0
    with caplog.at_level(logging.WARNING, logger="vexpress.inputs"):
        track = extract_kps_track(frames, detector, fps=12.5)
    expected = DEFAULT_FACE.absolute_kps(64, 64)[:3]
    np.testing.assert_allclose(track.points, np.broadcast_to(expected, (6, 3, 2)), atol=2e-3)
    assert (track.fps, track.width, track.height) == (12.5, 64, 64)
    assert any("2 of 6 frames" in r.getMessage() for r in caplog.records)


def test_no_face_in_any_frame(detector: FaceDetector) -> None:
    with pytest.raises(FaceNotFoundError, match="any of the 3 frames"):
        extract_kps_track(np.zeros((3, 64, 64, 3), np.uint8), detector)


def test_fill_missing_interpolates() -> None:
    a = np.zeros((3, 2), np.float32)
    b = np.full((3, 2), 4.0, np.float32)
    filled, count = fill_missing([None, a, None, None, b, None])
    assert count == 4
    np.testing.assert_allclose(filled[:, 0, 0], [0, 0, 4 / 3, 8 / 3, 4, 4], atol=1e-6)
    with pytest.raises(FaceNotFoundError):
        fill_missing([None, None])


def test_video_file_keeps_fps_and_resizes(detector: FaceDetector, portrait_rgb: np.ndarray, tmp_path: Path) -> None:
    import cv2

    frame = cv2.resize(portrait_rgb, (160, 96))
    frames = np.stack([frame] * 9)
    frames[4] = 0
    video = write_video(tmp_path / "driving.mp4", [frames], 25)
    info = probe_video(video)
    assert (info.fps, info.width, info.height, info.num_frames) == (25.0, 160, 96, 9)
    calls: list[tuple[int, int | None]] = []
    track = extract_kps_track(video, detector, width=64, height=64, progress=lambda d, t: calls.append((d, t)))
    assert (track.num_frames, track.fps, track.width, track.height) == (9, 25.0, 64, 64)
    expected = np.broadcast_to(DEFAULT_FACE.absolute_kps(64, 64)[:3], (9, 3, 2))
    np.testing.assert_allclose(track.points, expected, atol=0.05)
    assert calls[-1] == (9, 9)
    native = extract_kps_track(video, detector)
    assert (native.width, native.height) == (160, 96)
    np.testing.assert_allclose(native.points[0], DEFAULT_FACE.absolute_kps(160, 96)[:3], atol=0.05)


def test_bad_videos(detector: FaceDetector, tmp_path: Path, media_dir: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        extract_kps_track(tmp_path / "none.mp4", detector)
    with pytest.raises(InputError, match="no video track"):
        extract_kps_track(media_dir / "speech_16000_mono.wav", detector)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match="cannot be read"):
        extract_kps_track(tmp_path / "junk.mp4", detector)
