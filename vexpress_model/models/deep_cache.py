"""DeepCache (Ma et al., "DeepCache: Accelerating Diffusion Models for Free", CVPR 2024) for the denoising UNet.

A UNet's up path consumes the down path's skip features in reverse order. "Branch ``b``" is the skip connection
``b + 1`` counted from the input (branch 0: the one after the first layer of the first down block, the shallowest).
On a *full* step the UNet runs as always and stores the up path's hidden state just before the layer that consumes
that skip; on a *cached* step it runs only the down layers up to that skip, takes the stored state and runs the
remaining up layers: everything deeper (the rest of the down path, the mid block, the first up layers) is skipped.
Deep features change slowly between adjacent denoising steps, which is what the paper measures and exploits.

The cache is keyed per batch item by the caller (the sampler uses (window, unconditional?)), so that it follows
the windows however they are grouped into UNet calls, and each process holds only the windows it evaluates.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import torch


@dataclass
class FeatureCache:
    """The stored up-path states of one sampling run: key -> ``[F, C, h', w']``, kept on ``device`` (None: where
    they were computed; the host when the cache would not fit the device budget)."""

    branch: int
    device: torch.device | None = None
    features: dict[Hashable, torch.Tensor] = field(default_factory=dict)

    def clear(self) -> None:
        self.features.clear()

    @property
    def nbytes(self) -> int:
        # Entries of one UNet call are views of one tensor: count each storage once.
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in self.features.values()}
        return sum(storages.values())


@dataclass(frozen=True)
class CacheStep:
    """What one UNet call does with the cache: ``reuse`` (a cached step) or store (a full step), for the batch items
    named by ``keys`` (one key per item, in batch order)."""

    cache: FeatureCache
    keys: tuple[Hashable, ...]
    reuse: bool

    def exchange(self, x: torch.Tensor) -> torch.Tensor:
        """At the branch point: on a full step store ``x`` (``[B*F, C, h, w]``, items in batch order) and return it;
        on a cached step return the stored state of the same items instead."""
        features = self.cache.features
        if self.reuse:
            return torch.cat([features[key].to(x.device, x.dtype, non_blocking=True) for key in self.keys])
        items = x.split(x.shape[0] // len(self.keys))
        device = self.cache.device
        for key, item in zip(self.keys, items):
            features[key] = item if device is None or device == item.device else item.to(device)
        return x

