""""No face was found" gives advice that fits the situation: a face crop (the model's own input) or a whole photo
(--full_frame, where a tighter crop would not help), in the library's words or with the command line's flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.media import speech_like, write_audio
from vexpress_model.cli import main
from vexpress_model.conditioning.face_crop import crop_reference
from vexpress_model.errors import FaceNotFoundError
from vexpress_model.inputs.face_detection import FaceDetector


def test_full_photo_without_a_face_in_the_library(insightface_root: Path) -> None:
    black = np.zeros((90, 160, 3), np.uint8)  # the stand-in detector sees no face in black
    with FaceDetector(insightface_root, device="cpu") as detector:
        with pytest.raises(FaceNotFoundError) as info:
            crop_reference(black, 64, 64, detector=detector, name="image")
        assert str(info.value) == ("no face was found in the image; use a photo where the face is clearly visible "
                                   "and roughly frontal, or give its face box")
        with pytest.raises(FaceNotFoundError) as info:
            crop_reference(black, 64, 64, box=(10, 10, 60, 60), detector=detector, no_face_hint="mark it again")
        assert str(info.value) == "no face was found in the face box of the reference image; mark it again"


@pytest.fixture()
def black_photo_argv(tmp_path: Path, tiny_model_with_detector: Path) -> list[str]:
    Image.fromarray(np.zeros((180, 320, 3), np.uint8)).save(tmp_path / "black.png")
    write_audio(tmp_path / "speech.wav", speech_like(0.3, 16000), 16000)
    return ["--model_dir", str(tiny_model_with_detector), "--reference_image_path", str(tmp_path / "black.png"),
            "--audio_path", str(tmp_path / "speech.wav"), "--retarget_strategy", "fix_face", "--no_download",
            "--face_detector", "insightface", "--device", "cpu", "--image_width", "64", "--image_height", "64",
            "--output_path", str(tmp_path / "out.mp4")]


@pytest.mark.parametrize(("extra", "advice"), [
    ([], "use a portrait with a clearly visible, roughly frontal face (a square, face-centred crop works best), "
         "or give the keypoints with --reference_kps_path"),
    (["--full_frame"], "use a photo where the face is clearly visible and roughly frontal, mark the face with "
                       "--face_box x1,y1,x2,y2 (reference image pixels), or give the keypoints with "
                       "--reference_kps_path"),
    (["--full_frame", "--face_box", "10,10,90,90"],
     "check that --face_box x1,y1,x2,y2 (reference image pixels) frames the face, or give the keypoints with "
     "--reference_kps_path"),
])
def test_command_line_advice_fits_crop_or_full_frame(black_photo_argv: list[str], tmp_path: Path, capsys,
                                                     extra: list[str], advice: str) -> None:
    assert main(black_photo_argv + extra) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: no face was found in the ") and lines[0].endswith("; " + advice), lines[0]
    if extra:
        assert "face-centred crop" not in err
    assert not (tmp_path / "out.mp4").exists()
