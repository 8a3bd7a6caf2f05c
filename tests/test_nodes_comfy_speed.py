"""The VExpressSampler node's speed inputs (issue 17) in ComfyUI: left out, the exact path as before; ``fast``
runs its preset's steps with DeepCache and the guidance cut-off; compat original refuses another solver."""

from __future__ import annotations

import numpy as np
import pytest

from tests import comfy_harness
from tests.comfy_nodes import run_sampler

pytestmark = pytest.mark.comfyui
if comfy_harness.comfyui_path() is None:
    pytest.skip(f"ComfyUI node tests need a ComfyUI checkout: {comfy_harness.HOW_TO}", allow_module_level=True)


def _unet_calls(pipe, monkeypatch) -> list[tuple[int, bool]]:
    """(batch size, cached step?) of every denoising-UNet call."""
    unet = pipe.models.denoising_unet
    calls: list[tuple[int, bool]] = []
    original = unet.forward

    def spy(sample, *args, feature_cache=None, **kwargs):
        calls.append((int(sample.shape[0]), bool(feature_cache is not None and feature_cache.reuse)))
        return original(sample, *args, feature_cache=feature_cache, **kwargs)

    monkeypatch.setattr(unet, "forward", spy)
    return calls


def test_speed_inputs_left_out_or_exact_give_the_same_frames(node, pipe, portrait, embeds, fix_face_kps):
    before = run_sampler(node, pipe, portrait, fix_face_kps[0], embeds)[0]
    exact = run_sampler(node, pipe, portrait, fix_face_kps[0], embeds, speed="exact", scheduler="preset",
                        cache_interval=0, cfg_end=0.0)[0]
    assert np.array_equal(np.asarray(before), np.asarray(exact))


def test_fast_runs_its_preset(node, pipe, portrait, embeds, fix_face_kps, monkeypatch):
    from vexpress_model.pipeline.speed_presets import PRESETS

    calls = _unet_calls(pipe, monkeypatch)
    images, _ = run_sampler(node, pipe, portrait, fix_face_kps[0], embeds, speed="fast")
    preset = PRESETS["fast"]
    per_step = len(calls) // preset.num_inference_steps
    assert len(calls) == per_step * preset.num_inference_steps
    steps = [calls[i * per_step] for i in range(preset.num_inference_steps)]
    guided = -(-int(round(preset.cfg_end * preset.num_inference_steps * 1e6)) // 10**6)
    assert [reuse for _, reuse in steps] == [i % preset.cache_interval != 0 for i in range(len(steps))]
    assert steps[0][0] == 2 * steps[-1][0]  # both CFG halves before the cut-off, one after
    assert all(size == steps[0][0] for size, _ in steps[:guided])
    assert images.shape[0] == embeds[2]


def test_compat_original_with_another_solver_is_one_line(node, pipe, portrait, embeds, fix_face_kps):
    with pytest.raises(Exception, match="compat 'original' reproduces the original's DDIM sampler and cannot be "
                                        "combined with scheduler 'unipc'") as error:
        run_sampler(node, pipe, portrait, fix_face_kps[0], embeds, compat="original", scheduler="unipc")
    assert "\n" not in str(error.value)
