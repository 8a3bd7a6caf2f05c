"""Device memory: where the networks live while each stage runs (:class:`Placement`, :class:`ModulePlacement`), and
how much the sampler keeps where (:class:`MemoryPolicy`: memory budgets, the per-image activation estimate, windows
per UNet call, and whether kps features stay on the device, in host memory, or are recomputed per window).

**Placement.** The pipeline never moves a network itself: before each stage it calls ``placement.enter_stage(name,
modules, activation_bytes=...)`` with the networks that stage needs and the activation memory it will take on top of
their weights, after it (also after an error or a cancel) ``placement.exit_stage(name, modules)``, and the caller
calls ``placement.finish()`` when it is done with a generation. :class:`ModulePlacement` moves modules with
``Module.to``; the ComfyUI nodes substitute one whose ``enter_stage`` calls
``comfy.model_management.load_models_gpu`` on the matching ModelPatchers with ``memory_required=activation_bytes``
(``nodes/memory_management.py``), so ComfyUI's own memory manager decides what stays resident.

Stages and their networks (roles as in ``VExpressModels``):

=============  ==========================================================
``reference``  ``vae`` (encoder), ``reference_net``
``kps``        ``kps_guider``
``audio``      ``audio_encoder`` and/or ``audio_projection``
``denoise``    ``denoising_unet``
``decode``     ``vae``
=============  ==========================================================
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

logger = logging.getLogger("vexpress.pipeline")

@runtime_checkable
class Placement(Protocol):
    """Puts the networks of a stage on the compute device (and, if it wants, others off it)."""

    def enter_stage(self, name: str, modules: Mapping[str, nn.Module], *, activation_bytes: int) -> None:
        """Called before stage ``name`` runs; ``modules`` maps a role (``"vae"``, ...) to its network;
        ``activation_bytes`` is the device memory the stage's activations need beyond the weights (0 when small)."""

    def exit_stage(self, name: str, modules: Mapping[str, nn.Module]) -> None:
        """Called after stage ``name`` ran, also when it raised."""

    def finish(self) -> None:
        """Called when the caller is done with a generation (the CLI after writing, the nodes after decoding)."""


def module_device(module: nn.Module) -> torch.device | None:
    """The device of a module's first parameter or buffer (None for a module without tensors)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


class ModulePlacement:
    """The library's placement: a stage's networks on ``device``; with ``offload``, only while the stage runs.

    ``offload=False`` (keep-all): a network is moved to ``device`` when a stage first needs it and stays there --
    fastest when everything fits. ``offload=True`` (the original's ``--save_gpu_memory``, but effective): a
    stage's networks go to ``device`` when it starts and back to ``offload_device`` when it ends, so the device
    holds one stage's networks at a time (the denoising UNet alone while sampling) and none between stage calls.
    Nothing is deleted, so the same models serve the next generation.
    """

    def __init__(
        self,
        device: torch.device | str,
        *,
        offload: bool = False,
        offload_device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.offload = offload
        self.offload_device = torch.device(offload_device)
        self._resident: dict[int, tuple[str, nn.Module]] = {}

    def enter_stage(self, name: str, modules: Mapping[str, nn.Module], *, activation_bytes: int = 0) -> None:
        wanted = {id(module) for module in modules.values()}
        if self.offload:
            for key, (role, module) in list(self._resident.items()):
                if key not in wanted:
                    logger.debug("stage %s: moving %s to %s", name, role, self.offload_device)
                    module.to(self.offload_device)
                    del self._resident[key]
            self._release_cache()
        for role, module in modules.items():
            if module_device(module) != self.device:
                logger.debug("stage %s: moving %s to %s", name, role, self.device)
                module.to(self.device)
            self._resident[id(module)] = (role, module)

    def exit_stage(self, name: str, modules: Mapping[str, nn.Module]) -> None:
        if not self.offload:
            return
        for role, module in modules.items():
            if self._resident.pop(id(module), None) is not None:
                logger.debug("stage %s done: moving %s to %s", name, role, self.offload_device)
                module.to(self.offload_device)
        self._release_cache()

    def finish(self) -> None:
        if not self.offload:
            return
        for role, module in self._resident.values():
            logger.debug("finished: moving %s to %s", role, self.offload_device)
            module.to(self.offload_device)
        self._resident.clear()
        self._release_cache()

    def _release_cache(self) -> None:
        # Module.to frees the device copies only from PyTorch's point of view; hand the cached blocks back too, so
        # that other processes (and ComfyUI's memory estimates) see the memory as free.
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- memory policy

# Conditioning features up to this size are kept on the compute device between steps, up to the second size in
# host memory; larger ones are recomputed per window (see MemoryPolicy).
DEVICE_CONDITION_BUDGET_BYTES = 512 << 20
HOST_CONDITION_BUDGET_BYTES = 2 << 30


def estimate_unet_bytes_per_image(latent_hw: int, base_channels: int, dtype: torch.dtype) -> int:
    """Rough peak activation bytes of one image (one frame of one CFG branch) in a denoising-UNet call.

    Dominated by the highest-resolution level (the GEGLU projection alone is ``hw x 8C``, with several ``hw x C``
    to ``hw x 4C`` tensors alive around it), so it scales with ``hw x C0``. The factor 48 covers the measured peaks
    of reduced-width models on CPU in fp32 (1.7 MB per image at C0 = 32, 16x16 latents; 10.4 MB at C0 = 64, 32x32)
    and gives ~6 GB for one 48-image window at 512² in fp16, above the ~3 GB the original's activations take
    (PERF.md §3.7) -- an overestimate errs towards fewer windows per call, never towards running out of memory.
    """
    element = torch.tensor([], dtype=dtype).element_size()
    return int(latent_hw * base_channels * element * 48)


@dataclass
class MemoryPolicy:
    """The pipeline's memory decisions for one device and run dtype.

    * ``window_batch_size`` -- windows per UNet call; None picks the largest that fits ``memory_budget_bytes``
      (default: half the device memory free once the UNet is loaded, on CUDA; 1 GiB on CPU, where batching gains
      little).
    * ``condition_device_budget_bytes`` -- kps features larger than this stay in host memory and travel per UNet
      call, so that device memory does not grow with the audio length (at 512x512 they take 2.6 MB per frame in
      fp16; 60 s would be 4.7 GB). 0 with offloading.
    * ``host_condition_budget_bytes`` -- past this size even host memory would grow with the audio length, so kps
      features drawn on demand are recomputed per window instead of stored: the guider costs ~1 % of a UNet frame,
      nothing worth 2.6 MB/frame.
    """

    device: torch.device
    dtype: torch.dtype
    window_batch_size: int | None = None
    memory_budget_bytes: int | None = None
    condition_device_budget_bytes: int = DEVICE_CONDITION_BUDGET_BYTES
    host_condition_budget_bytes: int = HOST_CONDITION_BUDGET_BYTES

    def condition_device(self, num_bytes: int) -> torch.device:
        """Where conditioning features of ``num_bytes`` live between steps."""
        return self.device if num_bytes <= self.condition_device_budget_bytes else torch.device("cpu")

    def recompute_kps(self, num_bytes: int) -> bool:
        """Whether kps features of ``num_bytes`` (drawn on demand) are recomputed per window instead of stored."""
        return num_bytes > self.host_condition_budget_bytes

    def memory_budget(self) -> int:
        """Bytes the windows of one UNet call may take: ``memory_budget_bytes``, else half the device memory free
        now (CUDA; called with the UNet loaded), else 1 GiB (CPU, where batching gains little)."""
        if self.memory_budget_bytes is not None:
            return int(self.memory_budget_bytes)
        if self.device.type == "cuda" and torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(self.device)
            return free // 2
        return 1 << 30

    def window_bytes(self, frames_per_window: int, cfg: bool, latent_hw: int, channels: int) -> int:
        """Activation bytes of one UNet call on one window (both CFG halves when ``cfg``)."""
        per_image = estimate_unet_bytes_per_image(latent_hw, channels, self.dtype)
        return per_image * frames_per_window * (2 if cfg else 1)

    def windows_per_call(self, frames_per_window: int, cfg: bool, latent_hw: int, channels: int) -> int:
        """Windows per UNet call: ``window_batch_size``, else as many as :meth:`memory_budget` holds (at least 1).
        Call it with the UNet loaded, so that free device memory is measured with its weights in place."""
        if self.window_batch_size is not None:
            return max(1, int(self.window_batch_size))
        per_window = self.window_bytes(frames_per_window, cfg, latent_hw, channels)
        return max(1, int(self.memory_budget() // max(1, per_window)))
