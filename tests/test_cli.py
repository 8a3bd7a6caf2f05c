"""The command line: parity with the original through `--dump_dir`, a real MP4, and every bad input.

Parity runs the shared cases exactly as their `case.json` spells them (`--compat original --device cpu
--dtype fp32`) and compares the dumped arrays with the original implementation's, with the bounds of the parity
README §5. The bad-input tests assert the one-line message, exit code 2, no traceback and no output file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli_checks import read_video, run_bad
from vexpress_model.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
PARITY_CASES = ("S1_fix_face", "S2_no_retarget")


def case_argv(parity_dir: Path, case: str, out: Path) -> list[str]:
    spec = json.loads((parity_dir / "outputs" / case / "case.json").read_text())
    argv: list[str] = []
    for name, value in spec["cli_args"].items():
        if name in spec["path_args"]:
            value = str(parity_dir / value)
        argv += [f"--{name}", str(value)]
    for name, value in spec["fixed_args"].items():
        argv += [f"--{name}", str(value)]
    return argv + ["--output_path", str(out / "out.mp4"), "--dump_dir", str(out / "dump"), "--quiet"]


@pytest.mark.parametrize("case", PARITY_CASES)
def test_cli_matches_the_original(parity_dir: Path, tmp_path: Path, case: str) -> None:
    assert main(case_argv(parity_dir, case, tmp_path)) == 0
    expected = parity_dir / "outputs" / case
    spec = json.loads((expected / "case.json").read_text())
    dump = tmp_path / "dump"

    def load(name: str) -> tuple[np.ndarray, np.ndarray]:
        ours, theirs = np.load(dump / f"{name}.npy"), np.load(expected / f"{name}.npy")
        assert ours.shape == theirs.shape, name
        if name in spec["expected"]["dump_shapes"]:
            assert list(ours.shape) == spec["expected"]["dump_shapes"][name][0]
        return ours.astype(np.float64), theirs.astype(np.float64)

    ours, theirs = load("init_latents")
    assert np.array_equal(ours, theirs)
    ours, theirs = load("kps_images")
    assert np.array_equal(ours, theirs)
    ours, theirs = load("kps_sequence")
    assert np.abs(ours - theirs).max() <= 1e-4
    ours, theirs = load("audio_proj_output")
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() <= 1e-4
    for step in range(spec["cli_args"]["num_inference_steps"]):
        ours, theirs = load(f"latents_step{step}")
        assert np.abs(ours - theirs).max() <= 1e-4, f"step {step}"
    ours, theirs = load("latents_final")
    assert np.abs(ours - theirs).max() <= 1e-4
    ours, theirs = load("frames_uint8")
    assert np.abs(ours - theirs).max() <= 1

    video = read_video(tmp_path / "out.mp4")
    assert video["frames"] == spec["expected"]["video_length"]
    assert abs(float(video["fps"]) - spec["expected"]["fps_out"]) < 1e-3
    assert video["codec"] == "h264" and video["audio_codec"] == "aac"


def test_cli_end_to_end_default_mode(tiny_model_with_detector: Path, media_dir: Path, tmp_path: Path) -> None:
    """The real command (a subprocess) on a 44.1 kHz stereo MP3: H.264 at the requested fps, round(duration x
    fps) frames, AAC as long as the input audio at the input's own rate and channels (not the model's 16 kHz
    mono); face detection through insightface with the stand-in model."""
    out = tmp_path / "talk.mp4"
    audio = media_dir / "speech_44100_stereo.mp3"
    result = subprocess.run(
        [sys.executable, "-m", "vexpress_model", "--model_dir", str(tiny_model_with_detector),
         "--reference_image_path", str(media_dir / "portrait.png"), "--audio_path", str(audio),
         "--retarget_strategy", "fix_face", "--num_inference_steps", "2", "--fps", "25",
         "--context_frames", "12", "--context_overlap", "4", "--image_width", "64", "--image_height", "64",
         "--device", "cpu", "--output_path", str(out), "--quiet"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(out)
    video = read_video(out)
    assert video["codec"] == "h264" and video["pix_fmt"] == "yuv420p"
    assert video["fps"] == 25 and video["size"] == (64, 64)
    assert video["frames"] == round(2.0 * 25)
    assert video["audio_codec"] == "aac"
    assert (video["audio_rate"], video["audio_channels"]) == (44100, 2)
    assert abs(video["audio_s"] - 2.0) <= 1 / 25
    assert [p.name for p in tmp_path.iterdir()] == ["talk.mp4"], "temporary files left behind"


def test_cli_driving_kps_and_offload(tiny_model_with_detector: Path, media_dir: Path, tmp_path: Path) -> None:
    """offset_retarget with a driving track in the original .pth format, with real offloading."""
    out = tmp_path / "offset.mp4"
    argv = ["--model_dir", str(tiny_model_with_detector), "--reference_image_path", str(media_dir / "portrait.jpg"),
            "--audio_path", str(media_dir / "speech_16000_mono.wav"), "--kps_path", str(media_dir / "driving_kps.pth"),
            "--retarget_strategy", "offset_retarget", "--num_inference_steps", "1", "--image_width", "64",
            "--image_height", "64", "--context_frames", "16", "--context_overlap", "4", "--save_gpu_memory",
            "--device", "cpu", "--output_path", str(out), "--quiet"]
    assert main(argv) == 0
    assert read_video(out)["frames"] == 60


# ------------------------------------------------------------------------------------------- bad input


def test_missing_image(good_args, capsys, tmp_path):
    message = run_bad(good_args, capsys, **{"--reference_image_path": str(tmp_path / "nope.png")})
    assert "nope.png" in message and "does not exist" in message


def test_unreadable_image(good_args, capsys, tmp_path):
    bogus = tmp_path / "bogus.png"
    bogus.write_bytes(b"not an image at all")
    message = run_bad(good_args, capsys, **{"--reference_image_path": str(bogus)})
    assert "bogus.png" in message


def test_image_without_a_face(good_args, capsys, tmp_path):
    from PIL import Image

    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(black)
    message = run_bad(good_args, capsys, **{"--reference_image_path": str(black)})
    assert "no face" in message and "black.png" in message


@pytest.mark.parametrize("name", ["corrupt.mp3", "empty.wav"])
def test_bad_audio(good_args, capsys, media_dir, name):
    message = run_bad(good_args, capsys, **{"--audio_path": str(media_dir / name)})
    assert name in message


def test_zero_byte_audio(good_args, capsys, tmp_path):
    empty = tmp_path / "zero.mp3"
    empty.write_bytes(b"")
    assert "zero.mp3" in run_bad(good_args, capsys, **{"--audio_path": str(empty)})


def test_kps_file_of_the_wrong_shape(good_args, capsys, tmp_path):
    import torch

    wrong = tmp_path / "wrong.pth"
    torch.save([np.zeros((4, 3), np.float32)] * 10, str(wrong))
    message = run_bad(good_args, capsys, **{"--kps_path": str(wrong), "--retarget_strategy": "no_retarget"})
    assert "wrong.pth" in message


def test_kps_file_of_the_wrong_type(good_args, capsys, tmp_path):
    wrong = tmp_path / "text.pth"
    wrong.write_text("hello")
    message = run_bad(good_args, capsys, **{"--kps_path": str(wrong), "--retarget_strategy": "no_retarget"})
    assert "text.pth" in message


def test_driving_strategy_without_kps(good_args, capsys):
    assert "--kps_path" in run_bad(good_args, capsys, **{"--retarget_strategy": "naive_retarget"})


def test_unwritable_output_path(good_args, capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    message = run_bad(good_args, capsys, **{"--output_path": str(blocker / "video.mp4")})
    assert "video.mp4" in message


def test_incomplete_model_folder(good_args, capsys, tiny_model_dir, tmp_path):
    broken = tmp_path / "model_ckpts"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "v-express" / "motion_module.bin").unlink()
    # Missing model files are the one multi-line message: a table of the files, then the ways to get them.
    # insightface asked for by name: its detector file is then needed too (auto would take MediaPipe if installed).
    args = {**good_args, "--model_dir": str(broken), "--face_detector": "insightface"}
    argv = [part for key, value in args.items() for part in ((key, value) if value else (key,))]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "error: 2 V-Express model file(s) are missing and downloading is off:"
    assert lines[2].split()[0] == "motion_module.bin" and str(broken / "v-express" / "motion_module.bin") in lines[2]
    assert "git clone" in lines[-2] and "--no_download" in lines[-1] and "Traceback" not in "".join(lines)
    assert not Path(good_args["--output_path"]).parent.exists()


def test_silent_audio_is_valid(good_args, media_dir, tmp_path, caplog):
    out = tmp_path / "silent.mp4"
    args = {**good_args, "--audio_path": str(media_dir / "silence.wav"), "--output_path": str(out)}
    argv = [part for key, value in args.items() for part in ((key, value) if value else (key,))]
    with caplog.at_level("WARNING"):
        assert main(argv) == 0
    assert out.is_file()
    assert any("silent" in record.getMessage().lower() for record in caplog.records)
