"""How much the sampler keeps where: memory budgets, the per-image activation estimate, windows per UNet call, and
whether kps features stay on the device, in host memory, or are recomputed per window."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

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


def balanced_batches(windows: Sequence[range], max_per_batch: int) -> list[list[range]]:
    """Split windows, in order, into the fewest batches of at most ``max_per_batch``, with sizes differing by at
    most one (so a compiled UNet sees at most two batch shapes)."""
    if not windows:  # a process of a group that got no window this time
        return []
    max_per_batch = max(1, int(max_per_batch))
    count = math.ceil(len(windows) / max_per_batch)
    base, extra = divmod(len(windows), count)
    batches, start = [], 0
    for index in range(count):
        size = base + (1 if index < extra else 0)
        batches.append(list(windows[start : start + size]))
        start += size
    return batches


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

    def windows_per_call(self, frames_per_window: int, cfg: bool, latent_hw: int, channels: int,
                         reserved_bytes: int = 0) -> int:
        """Windows per UNet call: ``window_batch_size``, else as many as :meth:`memory_budget` holds (at least 1)
        once ``reserved_bytes`` (what stays on the device for the whole sampling: DeepCache features) are taken
        from it. Call it with the UNet loaded, so that free device memory is measured with its weights in place."""
        if self.window_batch_size is not None:
            return max(1, int(self.window_batch_size))
        per_window = self.window_bytes(frames_per_window, cfg, latent_hw, channels)
        return max(1, int((self.memory_budget() - reserved_bytes) // max(1, per_window)))
