"""The V-Kps guider features the sampler reads per window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class KpsFeatures:
    """Conditional V-Kps guider features ``[1, C0, T, h, w]`` (a broadcast view when every frame is the same).

    For clips too long to keep their features (``compute`` set), ``features`` holds only the first frame and each
    window's features are recomputed by the guider when the sampler asks for them.
    """

    features: torch.Tensor
    num_frames: int
    broadcast: bool = False
    compute: Callable[[range], torch.Tensor] | None = None

    @property
    def channels(self) -> int:
        return int(self.features.shape[1])

    def frames(self, window: range) -> torch.Tensor:
        """``[C0, F, h, w]`` for the frames of ``window``."""
        if self.compute is not None:
            return self.compute(window)
        if self.broadcast:
            return self.features[0, :, :1].expand(-1, len(window), -1, -1)
        return self.features[0, :, window.start : window.stop]
