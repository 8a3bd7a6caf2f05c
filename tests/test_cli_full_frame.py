"""Acceptance of ``--full_frame``: an ordinary landscape / portrait photo with the face off-centre, real face detection
(MediaPipe), the tiny random model; the video has the photo's size, the pixels outside the crop are the photo's,
the crop shows the generated face, and the pasted edge has no step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.media import off_centre_photo, speech_like, write_audio
from vexpress_model.cli import main
from vexpress_model.conditioning.face_crop import crop_reference
from vexpress_model.inputs.face_mediapipe import MediaPipeFaceDetector
from vexpress_model.outputs.paste_back import PasteBack
from vexpress_model.outputs.video import write_video

CRF = 12
FEATHER = 0.1


def decode(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])])


def edge_profile(frames: np.ndarray, crop, rows: slice) -> np.ndarray:
    """Mean |horizontal gradient| per column around the crop's left edge (30 px either side), over ``rows``."""
    band = frames[:, rows, crop.left - 30 : crop.left + 30].astype(np.float64)
    return np.abs(np.diff(band, axis=2)).mean(axis=(0, 1, 3))


@pytest.mark.parametrize("size", [(1280, 720), (720, 1280)])
def test_full_frame_video(tiny_model_dir: Path, tmp_path: Path, size: tuple[int, int]) -> None:
    width, height = size
    photo = off_centre_photo(width, height, face_x=0.7, face_y=0.35)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    write_audio(tmp_path / "speech.wav", speech_like(0.4, 16000), 16000)
    out = tmp_path / "full.mp4"
    argv = ["--model_dir", str(tiny_model_dir), "--reference_image_path", str(tmp_path / "photo.png"),
            "--audio_path", str(tmp_path / "speech.wav"), "--full_frame", "--color_match", "off",
            "--feather", str(FEATHER), "--crf", str(CRF), "--retarget_strategy", "fix_face",
            "--num_inference_steps", "2", "--fps", "10", "--context_frames", "4", "--context_overlap", "1",
            "--image_width", "64", "--image_height", "64", "--device", "cpu", "--no_download",
            "--dump_dir", str(tmp_path / "dump"), "--output_path", str(out), "--quiet"]
    assert main(argv) == 0  # no insightface model in the folder: auto uses MediaPipe
    video = decode(out)
    assert video.shape == (4, height, width, 3)

    with MediaPipeFaceDetector() as detector:
        cropped = crop_reference(photo, 64, 64, detector=detector)
    crop = cropped.crop
    assert crop.left > width // 2 - crop.size // 4  # the face is off-centre, right of the middle
    generated = np.load(tmp_path / "dump" / "frames_uint8.npy")
    expected = PasteBack(photo, crop, feather=FEATHER, color_match="off").paste(generated)

    # Outside the crop: the photo, within H.264 rounding (measured by encoding the photo itself at the same CRF).
    outside = np.ones((height, width), bool)
    outside[max(crop.top, 0) : crop.bottom, max(crop.left, 0) : crop.right] = False
    write_video(tmp_path / "photo.mp4", [np.repeat(photo[None], 4, axis=0)], fps=10, crf=CRF)
    rounding = np.abs(decode(tmp_path / "photo.mp4").astype(np.int16) - photo.astype(np.int16))[:, outside]
    error = np.abs(video.astype(np.int16) - photo.astype(np.int16))[:, outside]
    assert error.mean() <= rounding.mean() + 0.3, (error.mean(), rounding.mean())
    assert np.percentile(error, 99) <= np.percentile(rounding, 99) + 2

    # Inside: the generated face (and clearly not the photo).
    inner = (slice(None), slice(crop.top + crop.size // 4, crop.bottom - crop.size // 4),
             slice(crop.left + crop.size // 4, crop.right - crop.size // 4))
    to_generated = np.abs(video[inner].astype(np.float64) - expected[inner]).mean()
    to_photo = np.abs(video[inner].astype(np.float64) - photo[inner[1:]]).mean()
    assert to_generated < 8.0 and to_photo > 5 * to_generated, (to_generated, to_photo)

    # The seam: across the crop edge the gradient stays at the level of the inside and the outside.
    rows = slice(crop.top + crop.size // 4, crop.bottom - crop.size // 4)
    profile = edge_profile(video, crop, rows)
    level = max(profile[:20].mean(), profile[-20:].mean())
    assert profile.max() <= 1.5 * level, (profile.round(1), level)
    # The same measure does see the step of an unfeathered paste.
    hard = PasteBack(photo, crop, feather=0.0, color_match="off").paste(generated)
    hard_profile = edge_profile(hard, crop, rows)
    assert hard_profile.max() > 1.5 * max(hard_profile[:20].mean(), hard_profile[-20:].mean())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--full_frame", "--face_box", "10,20,30"], "--face_box must be four numbers"),
        (["--face_box", "10,20,30,40"], "add --full_frame or drop --face_box"),
        (["--full_frame", "--crop_scale", "nan"], "crop scale must be between"),
        (["--full_frame", "--feather", "inf"], "feather must be between"),
        (["--full_frame", "--compat", "original"], "use it with --compat fixed"),
        # A box starting with a minus sign is a value, not a flag; numbers are printed as given; the box is checked
        # against the photo's size (its header) with the flags, before any model or detector is touched.
        (["--full_frame", "--face_box", "-50,-50,-10,-10"],
         "the face box -50,-50,-10,-10 lies outside the 320x180 image; give it in the image's own pixels"),
        (["--full_frame", "--face_box", "2000,100,2100,150"],
         "the face box 2000,100,2100,150 lies outside the 320x180 image; give it in the image's own pixels"),
        (["--full_frame", "--face_box", "-50,-50,2000,200"],
         "the face box -50,-50,2000,200 reaches far outside the 320x180 image"),
        (["--full_frame", "--face_box", "100,100,50,150"],
         "a face box is x1,y1,x2,y2 with x2 > x1 and y2 > y1 (source pixels), got 100,100,50,150"),
    ],
)
def test_full_frame_settings_are_checked_first(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    Image.fromarray(off_centre_photo(320, 180)).save(tmp_path / "photo.png")
    write_audio(tmp_path / "speech.wav", speech_like(0.3, 16000), 16000)
    argv = ["--model_dir", str(tmp_path / "no_models"), "--reference_image_path", str(tmp_path / "photo.png"),
            "--audio_path", str(tmp_path / "speech.wav"), "--retarget_strategy", "fix_face", "--no_download",
            "--output_path", str(tmp_path / "out.mp4"), *extra]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and "Traceback" not in error
    assert error.count("\n") == 1
    assert not (tmp_path / "out.mp4").exists()


def test_driving_track_in_full_frame_pixels(tiny_model_dir: Path, tmp_path: Path) -> None:
    """--full_frame with no_retarget: the driving track (in its 1920x1080 video's pixels) is cut by the same rule
    around its own first-frame face, so the kps the model gets are in crop pixels, with the motion kept."""
    from vexpress_model.inputs.kps import KpsTrack, save_kps

    Image.fromarray(off_centre_photo(640, 360)).save(tmp_path / "photo.png")
    write_audio(tmp_path / "speech.wav", speech_like(0.4, 16000), 16000)
    face = np.array([[1300.0, 400.0], [1386.0, 405.0], [1342.0, 452.0]])
    points = np.stack([face + [6.0 * t, 0.0] for t in range(10)])
    save_kps(tmp_path / "driving.npz", KpsTrack(points, fps=10.0, width=1920, height=1080))
    argv = ["--model_dir", str(tiny_model_dir), "--reference_image_path", str(tmp_path / "photo.png"),
            "--audio_path", str(tmp_path / "speech.wav"), "--kps_path", str(tmp_path / "driving.npz"),
            "--full_frame", "--retarget_strategy", "no_retarget", "--num_inference_steps", "1", "--fps", "10",
            "--context_frames", "4", "--context_overlap", "1", "--image_width", "64", "--image_height", "64",
            "--device", "cpu", "--no_download", "--dump_dir", str(tmp_path / "dump"),
            "--output_path", str(tmp_path / "out.mp4"), "--quiet"]
    assert main(argv) == 0
    sequence = np.load(tmp_path / "dump" / "kps_sequence.npy")
    # The driving face is framed like a reference face: inside the 64x64 crop, around its middle.
    assert sequence.shape[1:] == (3, 2) and 16 < sequence[0, :, 0].mean() < 48 and 10 < sequence[0, :, 1].mean() < 40
    # 6 px per frame in a 1920x1080 video, in crop pixels (crop side = 3.4 x face size).
    face_size = 2 * 86.1
    step = np.diff(sequence[:4, 0, 0])
    np.testing.assert_allclose(step, 6.0 * 64 / round(3.4 * face_size), rtol=0.05)
    assert decode(tmp_path / "out.mp4").shape[1:3] == (360, 640)
