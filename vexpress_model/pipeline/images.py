"""Image tensors at the pipeline's edges: uint8 frame checks, reference image to [-1, 1], decoded frames to uint8."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..options import Compat


def as_uint8_frames(images: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """uint8 RGB ``[H, W, 3]`` or ``[T, H, W, 3]`` as a ``[T, H, W, 3]`` tensor; anything else is an InputError."""
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8 or tensor.ndim not in (3, 4) or tensor.shape[-1] != 3:
        raise InputError(
            f"{what} must be uint8 RGB [H, W, 3] or [T, H, W, 3], got {tuple(tensor.shape)} {tensor.dtype}"
        )
    return tensor if tensor.ndim == 4 else tensor.unsqueeze(0)


def all_frames_equal(frames: torch.Tensor, chunk: int = 16) -> bool:
    """Whether every frame equals the first; chunked with an early exit, so a long clip whose frames differ costs
    one comparison and never a full-size boolean copy."""
    first = frames[:1]
    for start in range(1, frames.shape[0], chunk):
        block = frames[start : start + chunk]
        if not torch.equal(block, first.expand_as(block)):
            return False
    return True


def reference_image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[H, W, 3]`` -> float32 ``[1, 3, H, W]`` in [-1, 1], as diffusers' ``VaeImageProcessor`` does
    (``x / 255`` then ``2x - 1``, both in float32). A float tensor ``[1, 3, H, W]`` is passed through."""
    tensor = torch.as_tensor(image)
    if tensor.is_floating_point():
        if tensor.ndim != 4 or tensor.shape[:2] != (1, 3):
            raise InputError(f"a float reference image must be [1, 3, H, W] in [-1, 1], got {tuple(tensor.shape)}")
        return tensor.float()
    frames = as_uint8_frames(tensor, "the reference image")
    if frames.shape[0] != 1:
        raise InputError(f"one reference image expected, got {frames.shape[0]}")
    return (frames.permute(0, 3, 1, 2).float() / 255.0) * 2.0 - 1.0


def frames_to_uint8(frames: torch.Tensor, compat: Compat) -> torch.Tensor:
    """Float frames in [0, 1] -> uint8. "original" truncates like ``(x * 255).astype(uint8)``; "fixed" rounds."""
    scaled = frames.float() * 255.0
    if compat != "original":
        scaled = scaled.round()
    return scaled.clamp_(0, 255).to(torch.uint8)
