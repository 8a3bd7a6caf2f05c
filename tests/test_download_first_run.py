"""The README's main command on a machine without the weights and without internet (the download is simulated:
a stand-in huggingface_hub that logs retry warnings as the real one does and then fails as offline)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from vexpress_model.cli import main

CHECKPOINTS = ("denoising_unet.bin", "reference_net.bin", "motion_module.bin", "v_kps_guider.bin",
               "audio_projection.bin")


@pytest.fixture
def offline_hub(monkeypatch):
    tries: list[str] = []

    def hf_hub_download(repo_id, filename, *, revision="main", local_dir=None, token=None, tqdm_class=None):
        hub_log = logging.getLogger("huggingface_hub.utils._http")
        for attempt in (1, 2):
            tries.append(filename)
            hub_log.warning("Retrying in %ds [Retry %d/5].", attempt, attempt)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files (offline)")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return tries


def _argv(tmp_path: Path, media_dir: Path, *extra: str) -> list[str]:
    # The README's main command on a machine without MediaPipe: the insightface detector is one of the files.
    # (Named here, because the test environment has MediaPipe, which `auto` would take instead.)
    return ["--model_dir", str(tmp_path / "model_ckpts"), "--reference_image_path", str(media_dir / "portrait.png"),
            "--audio_path", str(media_dir / "speech_16000_mono.wav"), "--retarget_strategy", "fix_face",
            "--face_detector", "insightface", "--output_path", str(tmp_path / "output" / "vexpress.mp4"), *extra]


def test_first_run_offline_reads_well(tmp_path, media_dir, offline_hub, capsys, caplog):
    with caplog.at_level(logging.INFO):
        assert main(_argv(tmp_path, media_dir)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    model_ckpts = tmp_path / "model_ckpts"
    # The failure: headline, a table (header + the 11 files), the git clone recipe, the flags.
    assert lines[0].startswith("error: could not download tk93/V-Express/denoising_unet.bin (OSError: We couldn't")
    assert lines[0].endswith("11 model file(s) are still missing:")
    assert lines[1].split() == ["file", "size", "goes", "to"]
    table = {line.split()[0]: line for line in lines[2:13]}
    assert set(table) == {*CHECKPOINTS, "config.json", "diffusion_pytorch_model.safetensors",
                          "preprocessor_config.json", "model.safetensors", "det_10g.onnx"}
    assert "2.7 GB" in table["denoising_unet.bin"] and str(model_ckpts / "v-express" / "denoising_unet.bin") in err
    assert "stable-diffusion-v1-5" not in err  # the UNet config ships with the package
    assert lines[13].split(": ")[1].split(", ") == ["facebook/wav2vec2-base-960h", "stabilityai/sd-vae-ft-mse",
                                                     "tk93/V-Express"]
    assert lines[14].startswith("Or get them all with one command")
    assert "git clone https://huggingface.co/tk93/V-Express" in lines[14]
    assert "--no_download" in lines[15] and "check_model" in lines[15]
    assert len(lines) == 16 and "Traceback" not in err
    # One progress line for the file it tried, retries summarised once, nothing printed by the hub itself.
    messages = [record.getMessage() for record in caplog.records]
    destination = model_ckpts / "v-express" / "denoising_unet.bin"
    assert [m for m in messages if m.startswith("downloading ")] == [
        f"downloading tk93/V-Express/denoising_unet.bin (2.7 GB) -> {destination} [1/11]"
    ]
    assert [m for m in messages if "retr" in m.lower()] == ["tk93/V-Express/denoising_unet.bin: 2 retries"]
    assert offline_hub == ["denoising_unet.bin"] * 2
    # No folder left that was created for nothing.
    assert not model_ckpts.exists()
    assert not (tmp_path / "output").exists()


def test_quiet_first_run_hides_progress_and_retries(tmp_path, media_dir, offline_hub, capsys):
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    root.addHandler(handler)  # as logging.basicConfig in a real run; --quiet raises the level to WARNING
    try:
        assert main(_argv(tmp_path, media_dir, "--quiet")) == 2
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err
    assert "downloading" not in err and "Retry" not in err and "retries" not in err
    assert err.startswith("error: could not download")


def test_no_download_lists_the_same_table(tmp_path, media_dir, offline_hub, capsys):
    assert main(_argv(tmp_path, media_dir, "--no_download")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "error: 11 V-Express model file(s) are missing and downloading is off:"
    assert len(lines) == 16 and offline_hub == []
    assert not (tmp_path / "model_ckpts").exists()


_REAL_HUB_RUN = """
import sys, time
time.sleep = lambda seconds: None  # huggingface_hub's back-off between retries (23 s), not what is tested
from vexpress_model.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_first_run_offline_with_the_real_hub_prints_no_hub_lines(tmp_path, media_dir):
    """The real huggingface_hub in a fresh process (its logging module is first imported inside the download and
    then adds its own stderr handler), a server that refuses connections: one line per file tried, the retries
    counted in one line, a headline that says the server cannot be reached."""
    import os
    import subprocess

    pytest.importorskip("huggingface_hub")
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    argv = _argv(tmp_path, media_dir)
    result = subprocess.run([sys.executable, "-c", _REAL_HUB_RUN, *argv], capture_output=True, text=True,
                            env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("downloading tk93/V-Express/denoising_unet.bin (2.7 GB) -> "), lines[:3]
    assert lines[1] == "tk93/V-Express/denoising_unet.bin: 5 retries"
    assert lines[2].startswith("error: could not download tk93/V-Express/denoising_unet.bin (cannot reach "
                               "http://127.0.0.1:9: no internet connection?); ")
    assert not [line for line in lines if "thrown while requesting" in line or "Retrying in" in line]
    assert "Traceback" not in result.stderr and not (tmp_path / "model_ckpts").exists()
