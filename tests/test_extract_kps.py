"""``python -m vexpress_model.extract_kps`` end to end: a generated video, the stand-in detector, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import media
from tests.fake_detector import DEFAULT_FACE
from vexpress_model.extract_kps import main
from vexpress_model.inputs.audio import decode_audio
from vexpress_model.inputs.kps import load_kps
from vexpress_model.outputs.video import write_video

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAMES, FPS = 15, 25


@pytest.fixture(scope="module")
def driving_video(tmp_path_factory: pytest.TempPathFactory, portrait_rgb: np.ndarray) -> Path:
    import cv2

    frame = cv2.resize(portrait_rgb, (128, 128))
    frames = np.stack([np.roll(frame, shift, axis=1) for shift in range(FRAMES)])
    audio = media.speech_like(FRAMES / FPS, 44100, 2)
    return write_video(tmp_path_factory.mktemp("video") / "driving.mp4", [frames], FPS, (audio, 44100))


def _args(video: Path, root: Path, **extra: str) -> list[str]:
    args = ["--video_path", str(video), "--insightface_model_path", str(root), "--device", "cpu",
            "--height", "64", "--width", "64"]
    for key, value in extra.items():
        args += [f"--{key}", value]
    return args


def test_original_format_and_mp3(tmp_path: Path, driving_video: Path, insightface_root: Path) -> None:
    kps_path, audio_path = tmp_path / "kps.pth", tmp_path / "aud.mp3"
    code = main(_args(driving_video, insightface_root, kps_sequence_save_path=str(kps_path),
                      audio_save_path=str(audio_path)))
    assert code == 0
    loaded = torch.load(kps_path, weights_only=False)  # the original inference.py's way
    assert isinstance(loaded, list) and len(loaded) == FRAMES
    expected = DEFAULT_FACE.absolute_kps(64, 64)[:3]
    np.testing.assert_allclose(np.stack(loaded), np.broadcast_to(expected, (FRAMES, 3, 2)), atol=0.05)
    audio = decode_audio(audio_path)
    assert audio.num_channels == 2 and audio.duration_s == pytest.approx(FRAMES / FPS, abs=0.05)


@pytest.mark.parametrize("name, fmt", [("kps.npz", "auto"), ("kps.json", "auto"), ("kps.track", "json")])
def test_our_formats_keep_fps_and_size(tmp_path: Path, driving_video: Path, insightface_root: Path,
                                      name: str, fmt: str) -> None:
    path = tmp_path / name
    assert main(_args(driving_video, insightface_root, kps_sequence_save_path=str(path), kps_format=fmt)) == 0
    track = load_kps(path)
    assert (track.num_frames, track.fps, track.width, track.height) == (FRAMES, FPS, 64, 64)
    if fmt == "json":
        assert json.loads(path.read_text())["format"] == "vexpress-kps"


def _bad_run(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str]) -> str:
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2
    lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "no partial output may be left"
    return lines[0]


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture, driving_video: Path, insightface_root: Path,
                   media_dir: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    kps = str(out / "kps.pth")
    message = _bad_run(tmp_path, capsys, _args(tmp_path / "missing.mp4", insightface_root, kps_sequence_save_path=kps))
    assert "does not exist" in message and "--video_path" in message
    message = _bad_run(tmp_path, capsys, _args(driving_video, tmp_path / "no_models", kps_sequence_save_path=kps,
                                              face_detector="insightface"))
    assert "buffalo_l" in message and "det_10g.onnx" in message
    message = _bad_run(tmp_path, capsys, _args(media_dir / "speech_16000_mono.wav", insightface_root,
                                              kps_sequence_save_path=kps))
    assert "no video track" in message
    message = _bad_run(tmp_path, capsys, _args(driving_video, insightface_root, audio_save_path=str(out / "a.xyz")))
    assert "unsupported extension" in message
    message = _bad_run(tmp_path, capsys, _args(driving_video, insightface_root))
    assert "nothing to do" in message


def test_no_face_and_no_audio_track(tmp_path: Path, capsys: pytest.CaptureFixture, insightface_root: Path) -> None:
    video = write_video(tmp_path / "in" / "black.mp4", [np.zeros((5, 64, 64, 3), np.uint8)], 25)
    out = tmp_path / "out"
    out.mkdir()
    for args, expected in (
        (dict(kps_sequence_save_path=str(out / "k.npz")), "no face was found"),
        (dict(kps_sequence_save_path=str(out / "k.npz"), audio_save_path=str(out / "a.wav")),
         f"video file {video} has no audio track, so --audio_save_path has nothing to save; drop that flag"),
    ):
        assert main(_args(video, insightface_root, **args)) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
        assert not out.exists() or not any(out.iterdir())


def test_command_line_process(tmp_path: Path, driving_video: Path, insightface_root: Path) -> None:
    """The module runs as a program; bad input gives exit code 2 and one line on stderr."""
    kps_path = tmp_path / "kps.pth"
    ok = subprocess.run([sys.executable, "-m", "vexpress_model.extract_kps",
                         *_args(driving_video, insightface_root, kps_sequence_save_path=str(kps_path))],
                        capture_output=True, text=True, cwd=REPO_ROOT)
    assert ok.returncode == 0, ok.stderr
    assert load_kps(kps_path).num_frames == FRAMES
    bad = subprocess.run([sys.executable, "-m", "vexpress_model.extract_kps", "--video_path", str(tmp_path / "x.mp4"),
                          "--kps_sequence_save_path", str(tmp_path / "k2.pth")],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("error:")
    assert not (tmp_path / "k2.pth").exists()


@pytest.mark.parametrize("flag, name", [("kps_sequence_save_path", "kps.npz"), ("audio_save_path", "aud.wav")])
def test_unwritable_or_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture, driving_video: Path,
                                      insightface_root: Path, flag: str, name: str) -> None:
    """Writes under a regular file fail for root too (CI runs as root, where file modes do not)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    message = _bad_run(out, capsys, _args(driving_video, insightface_root, **{flag: str(blocker / name)}))
    assert message == (
        f"error: cannot write --{flag} {blocker / name}: {blocker} is a file, not a folder; choose another path"
    )
    assert blocker.read_text() == "x" and not blocker.with_name("a_file.partial").exists()
    missing = out / "missing" / "deeper"
    message = _bad_run(out, capsys, _args(driving_video, insightface_root, **{flag: str(missing / name)}))
    assert message == (
        f"error: cannot write --{flag} {missing / name}: folder {missing} does not exist; "
        "create it or choose another path"
    )
    assert list(out.iterdir()) == []


def test_write_failure_in_a_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, driving_video: Path,
                                               insightface_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder that refuses writes (read-only mount): the write and its clean-up fail; still one line."""
    def refuse(self, *args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "write_bytes", refuse)
    monkeypatch.setattr(Path, "unlink", refuse)
    target = tmp_path / "kps.npz"
    message = _bad_run(tmp_path, capsys, _args(driving_video, insightface_root, kps_sequence_save_path=str(target)))
    assert message == f"error: cannot write kps file {target} (Read-only file system); choose a writable path"


def test_readme_same_person_scenario_on_the_example_video(tmp_path: Path, insightface_root: Path) -> None:
    """The README's extract_kps command, on the repo's own example driving video: kps .npz and its audio."""
    video = REPO_ROOT / "example_workflows" / "input" / "vexpress_driving.mp4"
    kps_path, audio_path = tmp_path / "kps.npz", tmp_path / "talk.mp3"
    assert main(_args(video, insightface_root, kps_sequence_save_path=str(kps_path),
                      audio_save_path=str(audio_path))) == 0
    track = load_kps(kps_path)
    assert (track.num_frames, track.fps) == (30, 10.0)
    assert decode_audio(audio_path).duration_s == pytest.approx(3.0, abs=0.06)


def test_a_bad_flag_is_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--video_path", "v.mp4", "--bogus", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == ("error: unrecognized arguments: --bogus 1; "
                   "`python -m vexpress_model.extract_kps --help` lists the flags\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--select", "closest"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("error: argument --select: invalid choice: 'closest'")


def test_help_shows_the_defaults() -> None:
    from vexpress_model.extract_kps import build_parser

    text = " ".join(build_parser().format_help().split())
    for shown in ("(default: cuda)", "--gpu_id GPU_ID which CUDA GPU detects faces (--device cuda or auto) "
                  "(default: 0)", "(default: ./model_ckpts/insightface_models/)", "--height HEIGHT frames are "
                  "resized to this height first (default: 512)", "(default: 512)", "(score) (default: nearest)",
                  "MediaPipe when installed (default: auto)", "npz otherwise (default: auto)"):
        assert shown in text, shown
    assert "the driving video (default" not in text  # empty defaults are not shown


def test_a_negative_gpu_id_is_refused_like_the_main_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--video_path", "v.mp4", "--kps_sequence_save_path", "k.npz", "--gpu_id", "-1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("error: argument --gpu_id: must be at least 0, got -1; "
                                       "`python -m vexpress_model.extract_kps --help` lists the flags\n")
