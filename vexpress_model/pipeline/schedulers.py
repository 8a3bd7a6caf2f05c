"""The sampler's solvers, all diffusers schedulers over the original's noise schedule (docs/speed.md).

``ddim`` is the original's ``DDIMScheduler`` (``DDIM_CONFIG``: scaled-linear betas, v-prediction, zero-terminal-SNR
rescale, trailing spacing), built exactly as before so that the default path stays bit-identical. ``dpmpp_2m``
(DPM-Solver++ 2M, Lu et al. 2022), ``unipc`` (UniPC, Zhao et al. 2023) and ``euler`` (Karras et al. 2022) are
built from the same betas and settings; each scheduler steps the whole latent once per timestep, so multistep
solvers see one history however the frames are split into windows or processes.
"""

from __future__ import annotations

from typing import Any

import torch

from ..options import SCHEDULERS, check_choice, check_scheduler_compat

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

# The settings every solver shares with DDIM_CONFIG (clip_sample is DDIM's own).
_SHARED_KEYS = ("beta_start", "beta_end", "beta_schedule", "steps_offset", "prediction_type",
                "rescale_betas_zero_snr", "timestep_spacing")


def make_scheduler(name: str, num_inference_steps: int, compat: str = "fixed") -> Any:
    """A fresh scheduler ``name`` (:data:`~vexpress_model.options.SCHEDULERS`) with its timesteps set; compat
    "original" takes ddim only (``check_scheduler_compat``).

    A new object per sampling run: ``set_timesteps`` and the multistep solvers' histories mutate it, and a pipeline
    may be shared (ComfyUI)."""
    check_choice(name, SCHEDULERS, "scheduler")
    check_scheduler_compat(name, compat)
    import diffusers

    shared = {key: DDIM_CONFIG[key] for key in _SHARED_KEYS}
    if name == "ddim":
        scheduler = diffusers.DDIMScheduler(**DDIM_CONFIG)
    elif name == "dpmpp_2m":
        # final_sigmas_type "zero": the last step lands on the clean latent, as DDIM's does with zero terminal SNR.
        scheduler = diffusers.DPMSolverMultistepScheduler(
            **shared, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
    elif name == "unipc":
        scheduler = diffusers.UniPCMultistepScheduler(**shared, solver_order=2, final_sigmas_type="zero")
    else:
        scheduler = diffusers.EulerDiscreteScheduler(**shared, final_sigmas_type="zero")
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def model_input(scheduler: Any, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The latents as the UNet must see them at ``t``: unchanged for DDIM, DPM-Solver++ and UniPC, divided by
    ``sqrt(sigma^2 + 1)`` for Euler (its sample lives in sigma space). Elementwise, so slicing windows afterwards
    gives what a per-window call would."""
    return scheduler.scale_model_input(latents, t)


def predicted_clean(scheduler: Any, output: Any, v_prediction: torch.Tensor, t: torch.Tensor,
                    latents: torch.Tensor) -> torch.Tensor:
    """The step's predicted clean latent (for previews): the scheduler's own where its output has one (DDIM,
    Euler), else ``sqrt(a) * x - sqrt(1 - a) * v`` with ``a`` the cumulative alpha at ``t`` (v-prediction)."""
    clean = getattr(output, "pred_original_sample", None)
    if clean is not None:
        return clean
    alpha = scheduler.alphas_cumprod[int(t)].to(latents.device, torch.float32)
    return alpha.sqrt() * latents.float() - (1 - alpha).sqrt() * v_prediction.float()
