"""What the command line reports before any model is looked at, in the words of its flags: a bad audio file before
missing weights (and without the heavy imports), a bad --device without torch's list of device types, sizes with
the nearest valid ones, timing settings by their flags, the library request's ranges, the minimum fps, and the
sampling bar's first tick and log line (found by a QA pass of the command line)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vexpress_model import cli, validation
from vexpress_model.errors import InputError
from vexpress_model.generate import _progress_bar, choose_device_and_dtype
from vexpress_model.pipeline.hooks import Hooks, SamplingSettings
from vexpress_model.pipeline.sampler import VExpressPipeline
from vexpress_model.pipeline.windows import context_windows, plan_frames
from vexpress_model.request import GenerationRequest

from .test_cli import good_args, run_bad  # noqa: F401  (good_args is a fixture)
from .test_pipeline_fakes import make_fake_models, make_inputs

ROOT = Path(__file__).resolve().parents[1]

# The command line in a fresh interpreter; prints its exit code and whether diffusers got imported.
_RUN_CLI = """
import sys
from vexpress_model.cli import main
code = main(sys.argv[1:])
print("exit", code, "diffusers", "diffusers" in sys.modules)
"""


@pytest.mark.parametrize("audio", ["empty.wav", "not_audio.wav"])
def test_bad_audio_is_reported_before_missing_weights_without_heavy_imports(media_dir, tmp_path, audio):
    (tmp_path / "not_audio.wav").write_text("this is a text file, not a RIFF/WAVE file\n")
    audio_path = media_dir / audio if audio == "empty.wav" else tmp_path / audio
    argv = ["--reference_image_path", str(media_dir / "portrait.png"), "--audio_path", str(audio_path),
            "--model_dir", str(tmp_path / "no_models_here"), "--no_download", "--retarget_strategy", "fix_face",
            "--output_path", str(tmp_path / "out" / "video.mp4")]
    done = subprocess.run([sys.executable, "-c", _RUN_CLI, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.strip() == "exit 2 diffusers False", done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert audio in lines[0]
    assert "model" not in lines[0] and "no_models_here" not in lines[0]


def test_unknown_device_names_the_valid_ones_only(good_args, capsys):  # noqa: F811
    message = run_bad(good_args, capsys, **{"--device": "tpu"})
    assert message == "error: unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"
    for device in ("meta", "cuda:x"):
        with pytest.raises(InputError) as error:
            choose_device_and_dtype(device, 0, "auto")
        assert str(error.value) == f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps"


@pytest.mark.parametrize(("flag", "value", "nearest"), [
    ("--image_width", "70", "64 or 72"), ("--image_height", "100", "96 or 104"), ("--image_width", "4", "8"),
])
def test_image_size_names_the_flag_and_the_nearest_valid_values(good_args, capsys, flag, value, nearest):  # noqa: F811
    message = run_bad(good_args, capsys, **{flag: value})
    assert message == (f"error: {flag} must be a positive multiple of 8 (the VAE works in 8-pixel blocks), got "
                       f"{value}; use {nearest}")


@pytest.mark.parametrize(("changes", "says"), [
    ({"--fps": "0.01"}, "error: --fps must be a number from 1 to 240 (frames per second of the video), got 0.01"),
    ({"--fps": "300"}, "error: --fps must be a number from 1 to 240 (frames per second of the video), got 300"),
    ({"--context_frames": "40"}, "error: --context_frames must be between 1 and 32"),
    ({"--context_overlap": "24"}, "error: --context_overlap must be at least 0 and smaller than --context_frames "
                                  "(24), got 24"),
    ({"--compat": "original", "--context_frames": "32", "--context_overlap": "4", "--fps": "10"},
     "error: the audio lasts 2.000 s, but --compat original needs at least one whole context window (32 frames"),
])
def test_timing_settings_are_named_by_their_flags(good_args, capsys, changes, says):  # noqa: F811
    message = run_bad(good_args, capsys, **changes)
    assert message.startswith(says), message
    if "--compat" in changes:
        assert message.endswith("; use --compat fixed or a smaller --context_frames")


def test_timing_library_messages_stay_neutral():
    with pytest.raises(InputError, match=r"^fps must be a number from 1 to 240 \(frames per second of the video\), "
                                         r"got 0\.5$"):
        plan_frames(1.0, 0.5, 8, 4)
    with pytest.raises(InputError, match=r"^context_frames must be between 1 and 32"):
        plan_frames(1.0, 30, 33, 4)
    with pytest.raises(InputError, match=r"use compat='fixed' or fewer context_frames$"):
        plan_frames(0.5, 30, 24, 4, "original")
    with pytest.raises(InputError, match=r"^compat='original' needs a frame count of whole context windows"):
        context_windows(10, 8, 4, "original")


def test_minimum_fps_is_one_frame_per_second():
    for fps in (0.01, 0.99):
        with pytest.raises(InputError, match="from 1 to 240"):
            plan_frames(1.0, fps, 24, 4)
    plan = plan_frames(1.0, 1.0, 24, 4)
    assert (plan.num_frames, plan.fps, plan.windows) == (1, 1.0, (range(0, 1),))


@pytest.mark.parametrize(("changes", "says"), [
    ({"crf": 99, "window_batch_size": -2}, "GenerationRequest crf must be between 0 and 51 (H.264 quality), got 99"),
    ({"crf": -1}, "GenerationRequest crf must be between 0 and 51 (H.264 quality), got -1"),
    ({"window_batch_size": -2}, "GenerationRequest window_batch_size must be at least 1 (context windows per UNet "
                                "call; None: as many as the memory budget allows), got -2"),
    ({"window_batch_size": 0}, "GenerationRequest window_batch_size must be at least 1"),
    ({"max_side": 0}, "GenerationRequest max_side must be at least 1 (pixels of the output's longer side; None: "
                      "keep the size), got 0"),
    ({"gpu_id": -1}, "GenerationRequest gpu_id must be at least 0, got -1"),
    ({"crf": 17.5}, "GenerationRequest crf must be a whole number, got 17.5"),
])
def test_library_request_checks_the_command_lines_ranges(changes, says):
    with pytest.raises(InputError) as error:
        GenerationRequest(reference_image="ref.jpg", audio="speech.wav", output="out.mp4", **changes)
    assert str(error.value).startswith(says), str(error.value)


def test_library_request_keeps_valid_ranges_and_the_cli_shares_them():
    request = GenerationRequest(reference_image="r.png", audio="a.wav", output="o.mp4", crf=51, window_batch_size=1,
                                max_side=8, gpu_id=3)
    assert (request.crf, request.window_batch_size, request.max_side, request.gpu_id) == (51, 1, 8, 3)
    assert cli.MAX_CRF is validation.MAX_CRF == 51


def test_sampling_bar_starts_counting_after_the_first_call(capsys):
    progress, close = _progress_bar(True)
    progress(1, 3, None)
    time.sleep(0.15)  # past tqdm's refresh interval
    progress(2, 3, None)
    time.sleep(0.15)
    progress(3, 3, None)
    close()
    ticks = [tick for tick in capsys.readouterr().err.split("\r") if "sampling" in tick]
    assert "1/3" in ticks[0] and "?call/s" in ticks[0], ticks
    rates = [float(tick.split(", ")[-1].split("call/s")[0]) for tick in ticks[1:] if "?call/s" not in tick]
    assert rates and all(rate < 100 for rate in rates), ticks  # about 7 calls/s, not tens of thousands


@pytest.mark.parametrize(("batch", "says"), [
    (1, "sampling 8 frames: 1 window of 8 frames in 1 UNet call per step, 1 step, CFG on"),
    (None, "sampling 12 frames: 2 windows of 8 frames in 1 UNet call per step, 2 steps, CFG on"),
])
def test_sampling_log_line_counts_in_the_singular_and_plural(caplog, batch, says):
    num_frames, steps = (8, 1) if batch == 1 else (12, 2)
    pipeline = VExpressPipeline(make_fake_models(), window_batch_size=batch)
    image, kps_images, audio = make_inputs(num_frames, size=32)
    with caplog.at_level(logging.INFO, logger="vexpress"):
        pipeline.sample(pipeline.encode_reference(image), pipeline.encode_kps(kps_images, num_frames),
                        pipeline.project_audio(audio), context_windows(num_frames, 8, 4),
                        SamplingSettings(steps, 3.5, 1, 1, 0), Hooks())
    assert says in [record.getMessage() for record in caplog.records]
