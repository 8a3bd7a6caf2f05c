"""The command line killed while it writes the video (a real subprocess, ``tests/cli_killed.py``): an existing
video under the output name stays as it was; SIGTERM leaves no partial file; SIGKILL leaves its hidden partial
file, which the next run aimed at the same output removes (and nothing else: not the hidden file of a writer still
running, nor that of another output)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vexpress_model.files import partial_path

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("cli_killed.py")
OLD_VIDEO = b"the video of an earlier run"


def _start(model_dir: Path, media_dir: Path, target: Path, marker: Path) -> subprocess.Popen:
    argv = ["--model_dir", str(model_dir), "--reference_image_path", str(media_dir / "portrait.png"),
            "--audio_path", str(media_dir / "speech_16000_mono.wav"), "--retarget_strategy", "fix_face",
            "--num_inference_steps", "1", "--fps", "10", "--context_frames", "8", "--context_overlap", "2",
            "--image_width", "64", "--image_height", "64", "--device", "cpu", "--no_download", "--quiet",
            "--output_path", str(target)]
    return subprocess.Popen([sys.executable, str(DRIVER), str(marker), "--", *argv], cwd=target.parent,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_until_writing(process: subprocess.Popen, marker: Path) -> None:
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the command never started writing the video"
        time.sleep(0.1)


def _partials(folder: Path, stem: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{stem}.") and ".partial" in p.name)


def test_killed_while_writing(tiny_model_with_detector: Path, media_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "talk.mp4"
    target.write_bytes(OLD_VIDEO)
    running = partial_path(target)  # a writer that is still alive (this test's own process)
    running.write_bytes(b"being written")

    # SIGKILL: nothing can run on the way out, so the hidden file stays; the old video is untouched.
    killed = _start(tiny_model_with_detector, media_dir, target, tmp_path / "writing-1")
    _wait_until_writing(killed, tmp_path / "writing-1")
    killed.kill()
    killed.communicate()
    assert target.read_bytes() == OLD_VIDEO
    left = [name for name in _partials(out, "talk") if name != running.name]
    assert len(left) == 1 and f"-{killed.pid}-" in left[0], _partials(out, "talk")
    other_output = out / left[0].replace(".talk.", ".other.", 1)  # a dead writer's file of another output
    other_output.write_bytes(b"not ours to remove")

    # SIGTERM: the next run removed the killed run's file when it started writing; its own goes on the way out.
    stopped = _start(tiny_model_with_detector, media_dir, target, tmp_path / "writing-2")
    _wait_until_writing(stopped, tmp_path / "writing-2")
    mine = [name for name in _partials(out, "talk") if name != running.name]
    assert len(mine) == 1 and f"-{stopped.pid}-" in mine[0] and left[0] not in mine
    stopped.send_signal(signal.SIGTERM)
    _, stderr = stopped.communicate(timeout=120)
    assert stopped.returncode == 130
    assert stderr.strip().splitlines() == ["interrupted: no video was written"], stderr[-3000:]
    assert target.read_bytes() == OLD_VIDEO
    assert sorted(p.name for p in out.iterdir()) == sorted([running.name, other_output.name, "talk.mp4"])
