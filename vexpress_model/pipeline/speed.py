"""The fast modes around the sampler (docs/speed.md): which steps guide and which run the whole UNet, and where the
DeepCache features live (the ``--speed`` presets: ``speed_presets``).

Each mode is off by default and the defaults are the exact path (the original's DDIM, 25 steps, guidance on every
step, the whole UNet every step):

* solver: ``pipeline.schedulers`` (DPM-Solver++ / UniPC / Euler over the same noise schedule);
* DeepCache (``models.deep_cache``): ``cache_interval`` N -- steps 0, N, 2N, ... run the whole UNet and store the
  deep features per window; the N - 1 steps after each run only the shallow branch ``cache_branch``;
* guidance cut-off: the first ``cfg_end`` of the steps use classifier-free guidance, the rest run the conditional
  branch only (one UNet item per window instead of two).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..errors import InputError
from ..models.deep_cache import CacheStep, FeatureCache
from .hooks import SamplingSettings

logger = logging.getLogger("vexpress.pipeline")

# Cached deep features up to this size stay on the compute device; larger ones (long clips) live in host memory and
# travel per UNet call, up to the host size; past that caching is turned off (a warning says so). Offloading keeps
# them in host memory whatever their size.
DEVICE_CACHE_BUDGET_BYTES = 1 << 30
HOST_CACHE_BUDGET_BYTES = 8 << 30


def guided(settings: SamplingSettings, step_index: int) -> bool:
    """Whether step ``step_index`` uses classifier-free guidance (before the ``cfg_end`` cut-off)."""
    return step_index < settings.guided_steps


def full_step(settings: SamplingSettings, step_index: int) -> bool:
    """Whether step ``step_index`` runs the whole UNet (and refreshes the cache): every ``cache_interval``-th."""
    return step_index % settings.cache_interval == 0


def cache_bytes(unet: Any, settings: SamplingSettings, frames: int, cfg: bool, latent_hw: tuple[int, int]) -> int:
    """Bytes of the DeepCache features of ``frames`` frames (over this process's windows), both CFG branches when
    ``cfg``; 0 with caching off."""
    if settings.cache_interval <= 1:
        return 0
    per_frame = unet.cached_feature_bytes(settings.cache_branch, latent_hw)
    return per_frame * frames * (2 if cfg else 1)


def cache_on_device(num_bytes: int, offload: bool) -> bool:
    """Whether DeepCache features of ``num_bytes`` stay on the compute device (then the memory policy counts them
    with the denoising stage's activations); else they live in host memory and travel per UNet call."""
    return not offload and num_bytes <= DEVICE_CACHE_BUDGET_BYTES


def open_feature_cache(unet: Any, settings: SamplingSettings, frames: int, cfg: bool, latent_hw: tuple[int, int],
                       device: torch.device, offload: bool) -> tuple[FeatureCache | None, int]:
    """The run's DeepCache store for ``frames`` frames of this process's windows, and the bytes of it that stay on
    the compute device (for the memory policy). None, 0 when caching is off: ``cache_interval`` 1, or more than
    :data:`HOST_CACHE_BUDGET_BYTES` (a warning says so; the run takes the whole UNet every step)."""
    if settings.cache_interval <= 1:
        return None, 0
    if not getattr(unet, "cached_feature_bytes", None):
        raise InputError("cache_interval > 1 needs the V-Express denoising UNet (this UNet has no feature cache)")
    branches = int(unet.cache_branches)
    if settings.cache_branch >= branches:
        raise InputError(f"cache_branch must be between 0 and {branches - 1} for this UNet, "
                         f"got {settings.cache_branch}")
    num_bytes = cache_bytes(unet, settings, frames, cfg, latent_hw)
    if num_bytes > HOST_CACHE_BUDGET_BYTES:
        logger.warning("feature caching is off for this clip: it would keep %.1f GB of features (more than %.0f GB); "
                       "use a deeper cache_branch or a shorter clip", num_bytes / 1e9, HOST_CACHE_BUDGET_BYTES / 1e9)
        return None, 0
    on_device = cache_on_device(num_bytes, offload)
    host = not on_device and device.type != "cpu"
    return FeatureCache(settings.cache_branch, torch.device("cpu") if host else None), num_bytes if on_device else 0


def cache_step(cache: FeatureCache | None, settings: SamplingSettings, step_index: int,
               keys: tuple[Any, ...]) -> CacheStep | None:
    """What a UNet call of step ``step_index`` does with ``cache`` for the items ``keys`` (None: no caching)."""
    if cache is None:
        return None
    return CacheStep(cache, keys, reuse=not full_step(settings, step_index))
