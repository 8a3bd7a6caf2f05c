"""The fast modes (issue 17, docs/speed.md) in the library: the default path unchanged against a dump made before
they existed, each solver's steps and timesteps, DeepCache skipping the deep blocks on the steps it should, the
guidance cut-off halving the UNet batch, presets. Front ends, several processes, offload: test_fast_modes_runs.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fakes import make_fake_models, make_inputs, one_torch_thread
from vexpress_model.errors import InputError
from vexpress_model.models.deep_cache import CacheStep, FeatureCache
from vexpress_model.options import SCHEDULERS
from vexpress_model.pipeline.hooks import Hooks, SamplingSettings
from vexpress_model.pipeline.sampler import VExpressPipeline
from vexpress_model.pipeline.schedulers import make_scheduler
from vexpress_model.pipeline.speed_presets import PRESETS, speed_values
from vexpress_model.pipeline.windows import context_windows
from vexpress_model.testing.short_clip import load_tiny_models, run_short_clip

FIXTURE = Path(__file__).parent / "fixtures" / "default_output.npz"



@pytest.fixture(scope="module")
def tiny_models(tiny_model_dir: Path):
    return load_tiny_models(tiny_model_dir)


# ------------------------------------------------------------------------------------------ the exact path


def test_default_output_equals_the_dump_made_before_the_fast_modes(tiny_models):
    expected = np.load(FIXTURE)
    with one_torch_thread():
        default = run_short_clip(tiny_models)
        explicit = run_short_clip(tiny_models, SamplingSettings(num_inference_steps=6, seed=7, scheduler="ddim",
                                                                cache_interval=1, cfg_end=1.0))
    for name in ("latents_final", "frames_uint8"):
        assert default[name].dtype == expected[name].dtype and default[name].shape == expected[name].shape
        assert np.array_equal(default[name], expected[name]), name  # bit for bit
        assert np.array_equal(explicit[name], expected[name]), name


def test_exact_preset_is_the_default_sampling():
    exact = SamplingSettings(**speed_values("exact"))
    assert exact == SamplingSettings() and not exact.fast_modes


# ---------------------------------------------------------------------------------------------- solvers


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("steps", [12, 16, 25])
def test_each_solver_takes_the_asked_steps_at_the_trailing_timesteps(name, steps):
    scheduler = make_scheduler(name, steps)
    # "trailing" spacing of 1000 training steps: 999 first, evenly down from there.
    expected = [round(1000 * (steps - i) / steps) - 1 for i in range(steps)]
    assert [int(t) for t in scheduler.timesteps] == expected
    config = scheduler.config
    assert config.prediction_type == "v_prediction" and config.rescale_betas_zero_snr
    assert (config.beta_start, config.beta_end, config.beta_schedule) == (0.00085, 0.012, "scaled_linear")


@pytest.mark.parametrize("name", SCHEDULERS)
def test_the_sampler_calls_the_unet_once_per_step_at_the_solver_timesteps(name):
    models = make_fake_models()
    seen: list[tuple[float, float]] = []
    unet = models.denoising_unet
    original = unet.forward

    def recording(sample, timestep, *args, **kwargs):
        seen.append((float(torch.as_tensor(timestep).reshape(-1)[0]), float(sample.std())))
        return original(sample, timestep, *args, **kwargs)

    unet.forward = recording
    image, kps_images, audio = make_inputs(20)
    pipeline = VExpressPipeline(models)
    windows = context_windows(20, 8, 4, "fixed")
    settings = SamplingSettings(num_inference_steps=12, scheduler=name)
    latents = pipeline.sample(pipeline.encode_reference(image), pipeline.encode_kps(kps_images, 20),
                              pipeline.project_audio(audio), windows, settings)
    assert [t for t, _ in seen] == [float(t) for t in make_scheduler(name, 12).timesteps]
    assert len(seen) == 12
    # The UNet sees unit-variance input at the first step for every solver (Euler's sigma-space latent is scaled).
    assert 0.8 < seen[0][1] < 1.2
    assert torch.isfinite(latents).all()


@pytest.mark.parametrize("name", ["dpmpp_2m", "unipc"])
def test_multistep_solvers_step_the_whole_latent_however_windows_are_grouped(name):
    models = make_fake_models()
    image, kps_images, audio = make_inputs(40)
    windows = context_windows(40, 8, 4, "fixed")
    settings = SamplingSettings(num_inference_steps=12, scheduler=name)
    results = []
    for batch in (1, None):
        pipeline = VExpressPipeline(models, window_batch_size=batch)
        results.append(pipeline.sample(pipeline.encode_reference(image), pipeline.encode_kps(kps_images, 40),
                                       pipeline.project_audio(audio), windows, settings))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=0)


def test_compat_original_refuses_another_solver():
    pipeline = VExpressPipeline(make_fake_models(), compat="original")
    image, kps_images, audio = make_inputs(8)
    with pytest.raises(InputError, match="compat 'original' .* scheduler 'unipc'"):
        pipeline.sample(pipeline.encode_reference(image), pipeline.encode_kps(kps_images, 8),
                        pipeline.project_audio(audio), [range(8)], SamplingSettings(scheduler="unipc"))


# ----------------------------------------------------------------------------------------------- DeepCache


def _count_calls(modules: dict[str, torch.nn.Module]) -> tuple[dict[str, int], list]:
    counts = dict.fromkeys(modules, 0)
    handles = []
    for name, module in modules.items():
        def hook(*_, name=name):
            counts[name] += 1
        handles.append(module.register_forward_hook(hook))
    return counts, handles


@pytest.mark.parametrize("branch", [0, 3])
def test_deep_cache_skips_the_deep_blocks_on_the_cached_steps(tiny_models, branch):
    unet = tiny_models.denoising_unet
    down, up = unet.down_blocks, unet.up_blocks
    # branch 0: the skip after the first down layer; consumed by the last up block's second layer.
    # branch 3: the skip after the second down block's first layer; consumed by the third up block's second layer.
    shallow_down, deep_down = ((down[0].resnets[0], down[0].resnets[1]) if branch == 0
                               else (down[1].resnets[0], down[1].resnets[1]))
    shallow_up, deep_up = ((up[3].resnets[1], up[3].resnets[0]) if branch == 0
                           else (up[2].resnets[1], up[2].resnets[0]))
    counts, handles = _count_calls({"conv_in": unet.conv_in, "mid": unet.mid_block.resnets[0],
                                    "shallow_down": shallow_down, "deep_down": deep_down, "shallow_up": shallow_up,
                                    "deep_up": deep_up, "deepest_up": up[0].resnets[0], "last_up": up[3].resnets[2]})
    try:
        settings = SamplingSettings(num_inference_steps=7, seed=7, cache_interval=3, cache_branch=branch)
        run_short_clip(tiny_models, settings, window_batch_size=2)
    finally:
        for handle in handles:
            handle.remove()
    calls_per_step = 2  # 4 windows, 2 per call
    steps, full_steps = 7, 3  # full: steps 0, 3, 6
    for name in ("conv_in", "shallow_down", "shallow_up", "last_up"):
        assert counts[name] == steps * calls_per_step, name
    for name in ("mid", "deep_down", "deep_up", "deepest_up"):
        assert counts[name] == full_steps * calls_per_step, name


def test_a_cached_step_at_the_same_inputs_gives_the_full_output(tiny_models):
    unet = tiny_models.denoising_unet
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn((2, 4, 6, 8, 8), generator=generator)
    audio = torch.randn((2, 6, 5, unet.config.cross_attention_dim), generator=generator)
    kps = torch.randn((2, unet.config.block_out_channels[0], 6, 8, 8), generator=generator)
    with torch.no_grad():
        bank = tiny_models.reference_net(torch.randn((1, 4, 8, 8), generator=generator))
    context = unet.prepare_reference(bank)
    uncond = torch.tensor([True, False])
    with torch.no_grad():
        full = unet(sample, 500, audio, kps, context, uncond=uncond)
        for branch in range(unet.cache_branches):
            cache = FeatureCache(branch)
            stored = unet(sample, 500, audio, kps, context, uncond=uncond,
                          feature_cache=CacheStep(cache, ("u", "c"), reuse=False))
            assert torch.equal(stored, full)
            per_frame = unet.cached_feature_bytes(branch, (8, 8))
            assert cache.nbytes == per_frame * 2 * 6, branch
            # Items looked up by key: the reversed batch reads the reversed entries.
            reused = unet(sample.flip(0), 500, audio.flip(0), kps.flip(0), context, uncond=uncond.flip(0),
                          feature_cache=CacheStep(cache, ("c", "u"), reuse=True))
            assert torch.equal(reused.flip(0), full), branch


def test_cache_branch_beyond_the_unet_is_one_line(tiny_models):
    settings = SamplingSettings(num_inference_steps=2, cache_interval=2, cache_branch=11)
    with pytest.raises(InputError, match=r"^cache_branch must be between 0 and 10 for this UNet, got 11$"):
        run_short_clip(tiny_models, settings)


# ------------------------------------------------------------------------------------------ guidance cut-off


@pytest.mark.parametrize("cfg_end,guided", [(1.0, 10), (0.6, 6), (0.65, 7), (0.05, 1)])
def test_guidance_cut_off_halves_the_unet_batch_after_it(cfg_end, guided):
    models = make_fake_models()
    batches: list[int] = []
    unet = models.denoising_unet
    original = unet.forward
    unet.forward = lambda sample, *a, **k: (batches.append(sample.shape[0]), original(sample, *a, **k))[1]
    image, kps_images, audio = make_inputs(20)
    pipeline = VExpressPipeline(models)
    windows = context_windows(20, 8, 4, "fixed")  # 4 windows, one call per step
    dumps: dict[str, np.ndarray] = {}
    hooks = Hooks(dump=lambda name, array: dumps.__setitem__(name, array))
    conditions = (pipeline.encode_reference(image), pipeline.encode_kps(kps_images, 20), pipeline.project_audio(audio))
    pipeline.sample(*conditions, windows, SamplingSettings(num_inference_steps=10, cfg_end=cfg_end), hooks)
    assert batches == [8] * guided + [4] * (10 - guided)
    # Up to the cut-off the steps are the exact path's.
    exact: dict[str, np.ndarray] = {}
    pipeline.sample(*conditions, windows, SamplingSettings(num_inference_steps=10),
                    Hooks(dump=lambda name, array: exact.__setitem__(name, array)))
    assert np.array_equal(dumps[f"latents_step{guided - 1}"], exact[f"latents_step{guided - 1}"])
    if guided < 10:
        assert not np.array_equal(dumps["latents_final"], exact["latents_final"])


# ------------------------------------------------------------------------------------------------- presets


def test_presets_stay_inside_the_published_ranges_and_explicit_values_override():
    for name in ("balanced", "fast"):
        preset = PRESETS[name]
        assert preset.num_inference_steps >= 12 and preset.cache_interval <= 3 and preset.cfg_end >= 0.6
        assert preset.scheduler != "ddim"
    assert speed_values("exact") == {"num_inference_steps": 25, "scheduler": "ddim", "cache_interval": 1,
                                     "cache_branch": 0, "cfg_end": 1.0}
    fast = speed_values("fast", num_inference_steps=20, cfg_end=1.0)
    assert (fast["num_inference_steps"], fast["cfg_end"]) == (20, 1.0)
    assert (fast["scheduler"], fast["cache_interval"]) == (PRESETS["fast"].scheduler, PRESETS["fast"].cache_interval)
    with pytest.raises(InputError, match="unknown speed 'turbo'; choose one of exact, balanced, fast"):
        speed_values("turbo")


@pytest.mark.parametrize("changes,says", [
    ({"cache_interval": 0}, "cache_interval must be at least 1"),
    ({"cache_branch": -1}, "cache_branch must be at least 0"),
    ({"cfg_end": 1.5}, "cfg_end must be greater than 0 and at most 1"),
    ({"cfg_end": 0.0}, "cfg_end must be greater than 0 and at most 1"),
    ({"cfg_end": float("nan")}, "cfg_end must be a finite number"),
    ({"scheduler": "dpm"}, "unknown scheduler 'dpm'"),
])
def test_bad_sampling_values_are_one_line(changes, says):
    with pytest.raises(InputError, match=says) as error:
        SamplingSettings(**changes)
    assert "\n" not in str(error.value)
