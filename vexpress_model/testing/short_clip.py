"""One short clip through the whole pipeline on the tiny random model (``random_model``, "tiny" size): the
fixed inputs and the run that the fast-modes tests and ``scripts/make_default_output_fixture.py`` share, so that
the committed dump of the default output and the test's run are the same call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bench_inputs import kps_image_source, kps_track, reference_image

RESOLUTION = 64
NUM_FRAMES = 20
CONTEXT_FRAMES = 8
CONTEXT_OVERLAP = 4


def short_clip_inputs(models: Any) -> tuple[np.ndarray, Any, torch.Tensor]:
    """The reference image, kps image source and audio windows ``[T, 10, D]`` of the short clip."""
    image = reference_image(RESOLUTION, seed=3)
    source = kps_image_source(kps_track(NUM_FRAMES, RESOLUTION), RESOLUTION)
    dim = int(models.constants.audio_proj_inp_dim)
    audio = torch.randn((NUM_FRAMES, 10, dim), generator=torch.Generator().manual_seed(5))
    return image, source, audio


def run_short_clip(models: Any, settings: Any = None, **pipeline_kwargs: Any) -> dict[str, np.ndarray]:
    """``latents_final`` (float32 ``[1, 4, T, h, w]``) and ``frames_uint8`` (``[T, H, W, 3]``) of the short clip,
    with the pipeline's defaults unless ``settings`` / ``pipeline_kwargs`` say otherwise."""
    from ..pipeline.hooks import Hooks, SamplingSettings
    from ..pipeline.sampler import VExpressPipeline
    from ..pipeline.windows import plan_frames

    dumps: dict[str, np.ndarray] = {}

    def keep(name: str, array: np.ndarray) -> None:
        if name in ("latents_final", "frames_uint8"):
            dumps[name] = array

    pipeline = VExpressPipeline(models, device="cpu", **pipeline_kwargs)
    plan = plan_frames(NUM_FRAMES / 30.0, 30.0, CONTEXT_FRAMES, CONTEXT_OVERLAP, "fixed")
    image, source, audio = short_clip_inputs(models)
    settings = settings or SamplingSettings(num_inference_steps=6, seed=7)
    hooks = Hooks(dump=keep)
    # The stages of ``generate`` in turn: the clip's audio is already per-frame windows (no wav2vec2 here).
    reference = pipeline.encode_reference(image, hooks)
    kps = pipeline.encode_kps(source, plan.num_frames, hooks)
    tokens = pipeline.project_audio(audio, hooks)
    latents = pipeline.sample(reference, kps, tokens, plan.windows, settings, hooks)
    for _ in pipeline.decode(latents, hooks=hooks):
        pass
    pipeline.finish()
    return dumps


def load_tiny_models(model_dir: Path) -> Any:
    """The tiny random model folder's networks, fp32 on the CPU."""
    from ..models.loading import load_vexpress_models

    return load_vexpress_models(model_dir, dtype=torch.float32, device="cpu")
