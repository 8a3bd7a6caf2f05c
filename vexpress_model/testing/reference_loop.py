"""The original's denoising loop restated literally (docs/spec.md §4.13, §4.14, §4.16): the yardstick for our fast loop.

Not used for generation. Tests compare :class:`~vexpress_model.pipeline.sampler.VExpressPipeline` against it for
any seed, window setting, size and guidance, and ``benchmarks/`` times it side by side with the fast loop. It does
what the original does, slowly on purpose:

* the UNet's plain paths (``fast_paths = False``): reference K/V re-projected in every call, the unconditional
  branch run through its zero reference bank and zero audio tokens;
* one UNet call per window, the CFG pair ``[uncond, cond]`` as its batch;
* latents and both CFG halves of the kps features kept on the CPU, each window moved to the device and back;
* per-frame accumulation of ``v / num_frame_context`` in the run dtype, and a DDIM step applied to the frames a
  window completes, immediately;
* VAE decode one frame at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..pipeline.hooks import SamplingSettings
from ..pipeline.sampler import LATENT_SCALE
from ..pipeline.schedulers import DDIM_CONFIG


@torch.inference_mode()
def original_style_sample(
    unet: Any,
    bank: dict[str, torch.Tensor],
    kps_features: torch.Tensor,
    audio_tokens: torch.Tensor,
    windows: Sequence[range],
    settings: SamplingSettings,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    init_latents: torch.Tensor | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Final latents ``[1, 4, T, h, w]`` (CPU, run dtype).

    ``kps_features``: conditional guider features ``[1, C0, T, h, w]``; ``audio_tokens``: ``[T, n, D]``.
    """
    from diffusers import DDIMScheduler

    device = torch.device(device)
    num_frames = int(kps_features.shape[2])
    h, w = kps_features.shape[-2:]
    cfg = settings.guidance_scale > 1.0
    scheduler = DDIMScheduler(**DDIM_CONFIG)
    scheduler.set_timesteps(settings.num_inference_steps, device=device)

    kps = kps_features.to("cpu", dtype)
    tokens = audio_tokens.to(device, dtype).unsqueeze(0)  # [1, T, n, D]
    if cfg:
        kps = torch.cat([torch.zeros_like(kps), kps])
        tokens = torch.cat([torch.zeros_like(tokens), tokens])

    previous_fast = unet.fast_paths
    unet.fast_paths = False
    try:
        context = unet.prepare_reference({key: value.to(device, dtype) for key, value in bank.items()})
        if init_latents is None:
            generator = torch.Generator(device="cpu").manual_seed(settings.seed)
            init_latents = torch.randn((1, 4, num_frames, h, w), generator=generator, dtype=dtype)
        latents = (init_latents * scheduler.init_noise_sigma).to("cpu", dtype)

        num_frame_context = torch.zeros(num_frames, dtype=torch.long, device=device)
        for window in windows:
            num_frame_context[list(window)] += 1

        for step_index, t in enumerate(scheduler.timesteps):
            counter = torch.zeros(num_frames, dtype=torch.long, device=device)
            pending: list[torch.Tensor | None] = [None] * num_frames
            for window in windows:
                frames = list(window)
                sample = latents[:, :, frames].to(device).repeat(2 if cfg else 1, 1, 1, 1, 1)
                batch = sample.shape[0]
                v = unet(
                    sample,
                    t,
                    tokens[:, frames],
                    kps[:, :, frames].to(device, dtype),
                    context,
                    reference_attention_weight=settings.reference_attention_weight,
                    audio_attention_weight=settings.audio_attention_weight,
                    uncond=torch.tensor([True, False][:batch] if cfg else [False], device=device),
                )
                if cfg:
                    v_uncond, v_cond = v.chunk(2)
                    v = v_uncond + settings.guidance_scale * (v_cond - v_uncond)
                counter[frames] += 1
                v = v / num_frame_context[frames][None, None, :, None, None]
                done_frames, done_preds = [], []
                for position, frame in enumerate(frames):
                    pending_pred = pending[frame]
                    pending[frame] = v[:, :, position] if pending_pred is None else pending_pred + v[:, :, position]
                    if counter[frame] == num_frame_context[frame]:
                        done_frames.append(frame)
                        done_preds.append(pending[frame])
                        pending[frame] = None
                stepped = scheduler.step(
                    torch.stack(done_preds, dim=2), t, latents[:, :, done_frames].to(device)
                ).prev_sample
                latents[:, :, done_frames] = stepped.to("cpu", dtype)
            if on_step is not None:
                on_step(step_index, latents)
    finally:
        unet.fast_paths = previous_fast
    return latents


@torch.inference_mode()
def original_style_decode(vae: Any, latents: torch.Tensor, *, device: torch.device | str) -> np.ndarray:
    """Float32 video ``[1, 3, T, H, W]`` in [0, 1], decoded one frame per VAE call like the original."""
    scaled = (1 / LATENT_SCALE) * latents
    frames = scaled[0].transpose(0, 1)  # [T, 4, h, w]
    video = []
    for index in range(frames.shape[0]):
        image = vae.decode(frames[index : index + 1].to(device)).sample
        video.append((image / 2 + 0.5).clamp(0, 1).cpu().float())
    return torch.cat(video).permute(1, 0, 2, 3).unsqueeze(0).numpy()
