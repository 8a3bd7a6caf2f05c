"""MediaPipe's native start-up log lines (absl, TensorFlow Lite) are hidden in the command lines, which opt in with
``quiet_native_logs``; the library's default (what the ComfyUI nodes get) leaves file descriptor 2 alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vexpress_model.inputs.face_mediapipe import MediaPipeFaceDetector, native_stderr_silenced
from vexpress_model.inputs.kps import load_kps
from vexpress_model.outputs.video import write_video

REPO = Path(__file__).resolve().parents[1]
NATIVE_NOISE = ("XNNPACK", "absl::InitializeLog", "W0000", "I0000", "inference_feedback_manager",
                "landmark_projection_calculator")


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(marker in line for marker in NATIVE_NOISE)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, portrait_rgb: np.ndarray) -> Path:
    """Two black frames (no face: the first runs find nothing), then six frames of the portrait."""
    import cv2

    face = cv2.resize(portrait_rgb, (128, 128))
    frames = np.stack([np.zeros_like(face)] * 2 + [np.roll(face, shift, axis=1) for shift in range(6)])
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", [frames], 10)


def test_extract_kps_command_shows_our_messages_but_no_native_log_lines(clip: Path, tmp_path: Path) -> None:
    kps_path = tmp_path / "kps.npz"
    run = subprocess.run([sys.executable, "-m", "vexpress_model.extract_kps", "--video_path", str(clip),
                          "--kps_sequence_save_path", str(kps_path), "--face_detector", "mediapipe",
                          "--height", "128", "--width", "128", "--device", "cpu"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert _noise(run.stderr) == [], run.stderr
    assert f"2 of 8 frames of video {clip} had no face (frames 0-1)" in run.stderr  # our warning still shows
    assert f"wrote 8 kps frames (10.0 fps, 128x128) to {kps_path}" in run.stderr
    assert load_kps(kps_path).num_frames == 8


def test_the_library_default_leaves_stderr_alone(portrait_rgb: np.ndarray) -> None:
    """Without the opt-in the native lines do reach stderr (so the test above proves something)."""
    code = ("import numpy as np; from tests import media; "
            "from vexpress_model.inputs.face_mediapipe import MediaPipeFaceDetector as D\n"
            "with D() as d: assert d.detect_faces(media.portrait_rgb())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert _noise(run.stderr), run.stderr


def test_quiet_detector_finds_the_same_faces(portrait_rgb: np.ndarray) -> None:
    """The warm-up run on a blank image leaves no trace in the results."""
    with MediaPipeFaceDetector() as plain, MediaPipeFaceDetector(quiet_native_logs=True) as quiet:
        blank = np.zeros((96, 96, 3), np.uint8)
        assert quiet.detect_faces(blank) == [] and plain.detect_faces(blank) == []
        expected, found = plain.detect_faces(portrait_rgb), quiet.detect_faces(portrait_rgb)
    assert len(found) == len(expected) == 1
    np.testing.assert_array_equal(found[0].kps, expected[0].kps)
    np.testing.assert_array_equal(found[0].box, expected[0].box)


def test_descriptor_2_is_restored_even_on_error(capfd: pytest.CaptureFixture) -> None:
    os.write(2, b"before\n")
    with pytest.raises(RuntimeError, match="inside"):
        with native_stderr_silenced():
            os.write(2, b"native noise\n")
            raise RuntimeError("inside")
    os.write(2, b"after\n")
    with native_stderr_silenced(enabled=False):
        os.write(2, b"not silenced\n")
    assert capfd.readouterr().err == "before\nafter\nnot silenced\n"


def test_generation_commands_show_no_native_log_lines(tiny_model_dir: Path, media_dir: Path, tmp_path: Path) -> None:
    """The batch command, two jobs (each detects its face with a new MediaPipe detector); its jobs run the main
    command's generation, so this covers both (``--verbose`` wiring: tests/test_cli_messages.py)."""
    import json

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"reference_image_path": str(media_dir / "portrait.png"),
                                        "audio_path": str(media_dir / "speech_short.wav"),
                                        "output_path": str(tmp_path / f"{name}.mp4"), "seed": seed}) + "\n"
                            for seed, name in enumerate(("a", "b"))))
    run = subprocess.run([sys.executable, "-m", "vexpress_model.batch", str(jobs), "--model_dir", str(tiny_model_dir),
                          "--face_detector", "mediapipe", "--retarget_strategy", "fix_face", "--num_inference_steps",
                          "1", "--fps", "10", "--context_frames", "4", "--context_overlap", "1", "--image_width",
                          "64", "--image_height", "64", "--device", "cpu", "--no_download"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr
    assert _noise(run.stderr) == [], run.stderr
    assert [line.split(" done in ")[0] for line in run.stdout.splitlines() if " done in " in line] == [
        "job 1 of jobs.jsonl", "job 2 of jobs.jsonl"]
