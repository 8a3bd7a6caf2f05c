"""The fast modes (issue 17) through the front ends and the run modes: command-line flags and their bad values
(one line, exit 2), the batch jobs file, GenerationRequest, two torchrun processes against one, offloading with
the DeepCache features counted in the memory budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_checks import run_bad
from tests.fakes import one_torch_thread
from tests.torchrun import torchrun
from vexpress_model.cli import build_parser, main
from vexpress_model.errors import InputError
from vexpress_model.pipeline.hooks import SamplingSettings
from vexpress_model.pipeline.memory import ModulePlacement
from vexpress_model.pipeline.sampler import VExpressPipeline
from vexpress_model.pipeline.speed import cache_bytes
from vexpress_model.pipeline.speed_presets import PRESETS
from vexpress_model.request import GenerationRequest, request_from_cli_args
from vexpress_model.testing.counting import CallCounter
from vexpress_model.testing.short_clip import CONTEXT_FRAMES, NUM_FRAMES, load_tiny_models, short_clip_inputs

# ---------------------------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("flag,value,says", [
    ("--cache_interval", "0", "argument --cache_interval: must be at least 1 (1 = the whole UNet every step), got 0"),
    ("--cache_branch", "-1", "argument --cache_branch: must be at least 0, got -1"),
    ("--cfg_end", "1.5", "argument --cfg_end: must be greater than 0 and at most 1 (a fraction of the steps), got 1.5"),
    ("--cfg_end", "nan", "argument --cfg_end: must be greater than 0 and at most 1"),
    ("--scheduler", "dpm", "argument --scheduler: invalid choice: 'dpm'"),
    ("--speed", "turbo", "argument --speed: invalid choice: 'turbo'"),
])
def test_bad_fast_mode_flags_are_one_line_with_exit_2(good_args, capsys, flag, value, says):
    argv = [part for key, item in {**good_args, flag: value}.items() for part in ((key, item) if item else (key,))]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {says}") and err.count("\n") == 1, err


@pytest.mark.parametrize("chosen", [("--scheduler", "unipc"), ("--speed", "fast")])
def test_compat_original_with_another_solver_names_both_flags(good_args, capsys, chosen):
    message = run_bad(good_args, capsys, **{"--compat": "original", chosen[0]: chosen[1]})
    assert message == (f"error: --compat original reproduces the original's DDIM sampler and cannot be combined "
                       f"with {chosen[0]} {chosen[1]}; drop one of them")


def test_compat_original_with_speed_and_an_explicit_ddim_runs_the_checks_through():
    # --speed fast --scheduler ddim: the solver is ddim, so compat original has nothing to refuse.
    args = build_parser().parse_args(["--reference_image_path", "a.png", "--audio_path", "a.wav", "--speed", "fast",
                                      "--scheduler", "ddim", "--compat", "original"])
    assert request_from_cli_args(args).sampling_values()["scheduler"] == "ddim"


# -------------------------------------------------------------------------------------- flags and requests


def test_flags_reach_the_request_and_override_the_preset():
    base = ["--reference_image_path", "a.png", "--audio_path", "a.wav"]
    default = request_from_cli_args(build_parser().parse_args(base))
    assert default.sampling_values() == {"num_inference_steps": 25, "scheduler": "ddim", "cache_interval": 1,
                                         "cache_branch": 0, "cfg_end": 1.0}
    fast = request_from_cli_args(build_parser().parse_args([*base, "--speed", "fast"])).sampling_values()
    preset = PRESETS["fast"]
    assert fast == {"num_inference_steps": preset.num_inference_steps, "scheduler": preset.scheduler,
                    "cache_interval": preset.cache_interval, "cache_branch": 0, "cfg_end": preset.cfg_end}
    custom = request_from_cli_args(build_parser().parse_args(
        [*base, "--speed", "fast", "--num_inference_steps", "30", "--scheduler", "euler", "--cache_interval", "2",
         "--cache_branch", "3", "--cfg_end", "0.9"])).sampling_values()
    assert custom == {"num_inference_steps": 30, "scheduler": "euler", "cache_interval": 2, "cache_branch": 3,
                      "cfg_end": 0.9}


def test_a_jobs_line_takes_the_fast_mode_flags():
    from vexpress_model.batch import job_namespace

    defaults = build_parser(inputs_required=False).parse_args([])
    args = job_namespace(defaults, {"reference_image_path": "a.png", "audio_path": "a.wav", "speed": "balanced",
                                    "cfg_end": 0.7})
    values = request_from_cli_args(args).sampling_values()
    assert (values["scheduler"], values["cfg_end"]) == (PRESETS["balanced"].scheduler, 0.7)
    with pytest.raises(InputError, match="argument --cache_interval: must be at least 1"):
        job_namespace(defaults, {"reference_image_path": "a.png", "audio_path": "a.wav", "cache_interval": 0})


@pytest.mark.parametrize("changes,says", [
    ({"speed": "turbo"}, "unknown speed 'turbo'"),
    ({"cache_interval": 0}, "GenerationRequest cache_interval must be at least 1"),
    ({"cfg_end": float("nan")}, "GenerationRequest cfg_end must be a finite number"),
    ({"scheduler": "lms"}, "unknown scheduler 'lms'"),
])
def test_library_requests_check_the_fast_mode_values(changes, says):
    with pytest.raises(InputError, match=says):
        GenerationRequest(reference_image="r.png", audio="a.wav", output="o.mp4", **changes)


# ---------------------------------------------------------------------------------------- several processes


def _flags(model_dir: Path, media_dir: Path, out: Path) -> list[str]:
    # 30 frames in 5 windows of 8: the ranks hold different windows (and so different cached features); DPM-Solver++
    # keeps its history of the whole latent; the guidance stops after 3 of 4 steps.
    return ["--model_dir", str(model_dir), "--reference_image_path", str(media_dir / "portrait.png"),
            "--audio_path", str(media_dir / "speech_16000_mono.wav"), "--retarget_strategy", "fix_face",
            "--num_inference_steps", "4", "--scheduler", "dpmpp_2m", "--cache_interval", "2", "--cfg_end", "0.75",
            "--fps", "15", "--context_frames", "8", "--context_overlap", "2", "--image_width", "64",
            "--image_height", "64", "--device", "cpu", "--dtype", "fp32", "--window_batch_size", "1",
            "--no_download", "--quiet", "--output_path", str(out / "video.mp4"), "--dump_dir", str(out / "dump")]



def test_cache_and_cut_off_over_two_processes_give_the_single_process_output(
    tiny_model_with_detector: Path, media_dir: Path, tmp_path: Path
) -> None:
    single = tmp_path / "single"
    with one_torch_thread():
        assert main(_flags(tiny_model_with_detector, media_dir, single)) == 0
    several = tmp_path / "several"
    several.mkdir()
    result = torchrun(2, ["-m", "vexpress_model", *_flags(tiny_model_with_detector, media_dir, several),
                          "--dist_timeout", "120"], cwd=several)
    assert result.returncode == 0, result.stderr[-4000:]
    for name in ("latents_step0", "latents_step1", "latents_step3", "latents_final"):
        ours, theirs = np.load(several / "dump" / f"{name}.npy"), np.load(single / "dump" / f"{name}.npy")
        assert np.abs(ours - theirs).max() <= 1e-5, name
    frames = np.load(several / "dump" / "frames_uint8.npy").astype(int)
    assert np.abs(frames - np.load(single / "dump" / "frames_uint8.npy").astype(int)).max() <= 1


# ------------------------------------------------------------------------------------------------- offload


class RecordingPlacement(ModulePlacement):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.activation_bytes: dict[str, int] = {}

    def enter_stage(self, name, modules, *, activation_bytes):
        self.activation_bytes[name] = activation_bytes
        super().enter_stage(name, modules, activation_bytes=activation_bytes)


def _sample(models, offload: bool, settings: SamplingSettings, budget: int | None = None):
    from vexpress_model.pipeline.windows import plan_frames

    placement = RecordingPlacement(torch.device("cpu"), offload=offload)
    pipeline = VExpressPipeline(models, device="cpu", offload=offload, placement=placement,
                                memory_budget_bytes=budget)
    image, source, audio = short_clip_inputs(models)
    plan = plan_frames(NUM_FRAMES / 30.0, 30.0, CONTEXT_FRAMES, 4, "fixed")
    with CallCounter(models) as calls:
        latents = pipeline.sample(pipeline.encode_reference(image), pipeline.encode_kps(source, NUM_FRAMES),
                                  pipeline.project_audio(audio), plan, settings)
    return latents, pipeline, placement, plan, calls


def test_offload_keeps_the_cache_inside_the_memory_budget(tiny_model_dir: Path):
    models = load_tiny_models(tiny_model_dir)
    settings = SamplingSettings(num_inference_steps=3, seed=7, cache_interval=2)
    unet = models.denoising_unet
    latent_hw = (64 // 8, 64 // 8)
    window_bytes = VExpressPipeline(models, device="cpu").memory.window_bytes(CONTEXT_FRAMES, True, 64, 32)
    kept, pipeline, placement, plan, _ = _sample(models, False, settings)
    frames = len(plan.windows) * CONTEXT_FRAMES
    expected = unet.cached_feature_bytes(0, latent_hw) * frames * 2
    assert cache_bytes(unet, settings, frames, True, latent_hw) == expected
    # Kept on the device: the features are what the estimate says, and the denoise stage asks room for them.
    assert pipeline.feature_cache_bytes == expected
    assert placement.activation_bytes["denoise"] == window_bytes + expected
    # A budget for exactly one window plus the cache: one window per UNet call, the cache still fits.
    _, pipeline, placement, plan, calls = _sample(models, False, settings, budget=window_bytes + expected)
    assert calls["unet"] == 3 * len(plan.windows)
    # Offloading: the features stay in host memory, the device is asked for the windows' activations only.
    offloaded, pipeline, placement, _, _ = _sample(models, True, settings)
    assert placement.activation_bytes["denoise"] == window_bytes
    assert pipeline.feature_cache_bytes == expected
    torch.testing.assert_close(offloaded, kept, atol=1e-6, rtol=0)
