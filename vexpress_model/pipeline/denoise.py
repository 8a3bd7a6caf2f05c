"""The windowed classifier-free-guidance DDIM loop (docs/spec.md §4.12, §4.13):

* :class:`UNetRunner` -- calls the denoising UNet (optionally ``torch.compile``-d, falling back to eager).
* :class:`WindowDenoiser` -- per step, evaluates this process's context windows in batches (one UNet call per
  batch, both CFG halves in it) and hands each window's guided v-prediction to the accumulator.

The windows themselves -- their plan, batches, inputs and the per-frame accumulator -- are in :mod:`.windows`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from ..options import Compat
from .hooks import Hooks, SamplingSettings
from .windows import KpsFeatures, WindowPlan, batch_inputs, make_accumulator

logger = logging.getLogger("vexpress.pipeline")

# The original's scheduler (inference_v2.yaml, docs/spec.md §4.12); every other DDIMScheduler argument is its default.
DDIM_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}


@runtime_checkable
class UNetLike(Protocol):
    """What the sampler needs of a denoising UNet (``models.DenoisingUNet`` and the tests' stand-in)."""

    fast_paths: bool

    def prepare_reference(self, bank: dict[str, torch.Tensor]) -> Any:
        """The per-video reference context from the ReferenceNet bank (module path -> ``[1, h*w, C]``)."""

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        audio_tokens: torch.Tensor,
        kps_features: torch.Tensor,
        reference: Any,
        *,
        reference_attention_weight: float,
        audio_attention_weight: float,
        uncond: torch.Tensor,
    ) -> torch.Tensor:
        """v-prediction ``[B, 4, F, h, w]`` for ``sample [B, 4, F, h, w]``; ``uncond [B]`` flags the CFG branch."""


# ------------------------------------------------------------------------------------------------------ UNet


class UNetRunner:
    """Calls the denoising UNet, ``torch.compile``-d when asked (falls back to eager if compiling fails)."""

    def __init__(self, unet: UNetLike, *, compile_unet: bool = False) -> None:
        self.unet = unet
        self.compile_unet = compile_unet
        self._compiled: Callable[..., torch.Tensor] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.compile_unet:
            return self.unet(*args, **kwargs)
        if self._compiled is None:
            self._compiled = torch.compile(self.unet, dynamic=False)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as error:
            dynamo_errors: tuple[type[BaseException], ...] = ()
            with contextlib.suppress(Exception):
                from torch._dynamo import exc as dynamo_exc

                dynamo_errors = (dynamo_exc.TorchDynamoException,)
            if not dynamo_errors or not isinstance(error, dynamo_errors):
                raise
            logger.warning("torch.compile of the UNet failed (%s); continuing without compiling", error)
            self.compile_unet = False
            self._compiled = None
            return self.unet(*args, **kwargs)


# ------------------------------------------------------------------------------------------------------ loop


@dataclass
class WindowDenoiser:
    """One sampling run's loop: ``run`` takes the initial latents to the final ones."""

    unet: Callable[..., torch.Tensor]
    device: torch.device
    dtype: torch.dtype
    compat: Compat
    settings: SamplingSettings
    hooks: Hooks
    stats: dict[str, int]
    process_group: Any = None

    def run(
        self,
        latents: torch.Tensor,
        scheduler: Any,
        plan: WindowPlan,
        context: Any,
        kps: KpsFeatures,
        audio_tokens: torch.Tensor,
    ) -> torch.Tensor:
        hooks = self.hooks
        accumulator = make_accumulator(self.compat, latents, plan.counts)
        timesteps = scheduler.timesteps
        total = len(timesteps) * len(plan.batches)
        done = 0
        for step_index, t in enumerate(timesteps):
            accumulator.reset()
            for batch_index, batch in enumerate(plan.batches):
                hooks.check_cancel()
                guided = self.guided_prediction(latents, batch, t, context, kps, audio_tokens, plan.cfg)
                for item, window in enumerate(batch):
                    accumulator.add(window, guided[item : item + 1])
                done += 1
                if hooks.progress is not None and batch_index < len(plan.batches) - 1:
                    hooks.progress(done, total, None)
            accumulator.all_reduce(self.process_group)
            output = scheduler.step(accumulator.result(), t, latents)
            latents = output.prev_sample.to(latents.dtype)
            hooks.emit(f"latents_step{step_index}", latents)
            if hooks.progress is not None:
                hooks.progress(done, total, output.pred_original_sample)
        return latents

    def guided_prediction(
        self,
        latents: torch.Tensor,
        batch: list[range],
        t: torch.Tensor,
        context: Any,
        kps: KpsFeatures,
        audio_tokens: torch.Tensor,
        cfg: bool,
    ) -> torch.Tensor:
        """CFG-combined v-prediction ``[k, 4, F, h, w]`` for the k windows of ``batch`` (one UNet call); float32 in
        "fixed", the run dtype in "original"."""
        settings = self.settings
        sample, audio, kps_batch = batch_inputs(batch, latents, audio_tokens, kps, self.device, self.dtype)
        k = len(batch)
        if cfg:
            # Unconditional half first, like the original's [uncond, cond] CFG batch: zero kps features, zero audio
            # tokens and (flagged by ``uncond``) a zero reference bank: all three conditions dropped (docs/spec.md
            # §4.13).
            sample = torch.cat([sample, sample])
            audio = torch.cat([torch.zeros_like(audio), audio])
            kps_batch = torch.cat([torch.zeros_like(kps_batch), kps_batch])
            uncond = torch.arange(2 * k) < k
        else:
            uncond = torch.zeros(k, dtype=torch.bool)
        # ``uncond`` stays on the CPU: the UNet reads it on the host, which must not cost a device sync.
        prediction = self.unet(
            sample,
            t,
            audio,
            kps_batch,
            context,
            reference_attention_weight=settings.reference_attention_weight,
            audio_attention_weight=settings.audio_attention_weight,
            uncond=uncond,
        )
        self.stats["unet_calls"] += 1
        self.stats["unet_images"] += int(prediction.shape[0] * prediction.shape[2])
        if self.compat != "original":
            prediction = prediction.float()
        if not cfg:
            return prediction
        uncond_v, cond_v = prediction[:k], prediction[k:]
        return uncond_v + settings.guidance_scale * (cond_v - uncond_v)
