"""Synthetic benchmark inputs (a smooth kps track, its V-Kps images, a reference image, audio windows) and
measuring helpers (peak RSS, a call counter) shared by the scripts in ``benchmarks/``; the random-weight models
come from :mod:`vexpress_model.testing.bench_models`."""

from __future__ import annotations

import math
import resource

import numpy as np
import torch


def kps_track(num_frames: int, resolution: int) -> np.ndarray:
    """A smooth head-motion kps track ``[T, 3, 2]`` (eyes and nose), in pixels of a ``resolution`` square."""
    base = np.array([[0.42, 0.40], [0.58, 0.40], [0.50, 0.52]], dtype=np.float64) * resolution
    t = np.arange(num_frames, dtype=np.float64)[:, None, None] / 30.0
    wobble = np.concatenate([np.sin(2 * math.pi * 0.5 * t), 0.6 * np.cos(2 * math.pi * 0.3 * t)], axis=2)
    return (base[None] + 0.03 * resolution * wobble).astype(np.float32)


def kps_image_source(track: np.ndarray, resolution: int):
    """A callable ``(start, stop) -> uint8 [n, H, W, 3]`` drawing V-Kps images on demand."""
    from ..conditioning.kps_images import draw_kps_image

    def source(start: int, stop: int) -> np.ndarray:
        return np.stack([draw_kps_image(resolution, resolution, track[i]) for i in range(start, stop)])

    return source


def reference_image(resolution: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Low-frequency noise looks more like an image than white noise to the VAE; the values do not matter.
    small = rng.integers(0, 256, (resolution // 16, resolution // 16, 3)).astype(np.uint8)
    return np.kron(small, np.ones((16, 16, 1), dtype=np.uint8))


def audio_windows(num_frames: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn((num_frames, 10, dim), generator=torch.Generator().manual_seed(seed))


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class CallCounter:
    """Counts calls of a module's forward (or of a named method) without changing it."""

    def __init__(self, module: torch.nn.Module, method: str = "forward") -> None:
        self.count = 0
        self.images = 0
        original = getattr(module, method)

        def counted(*args, **kwargs):
            self.count += 1
            if args and isinstance(args[0], torch.Tensor):
                shape = args[0].shape
                self.images += int(shape[0] * (shape[2] if args[0].ndim == 5 else 1))
            return original(*args, **kwargs)

        setattr(module, method, counted)
