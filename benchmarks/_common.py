"""Shared pieces of the pipeline benchmarks: random-weight models of the real topology, synthetic inputs.

Model sizes (PERF.md §5.1): every size keeps the SD-1.5 block structure (4 levels, 2 layers per block, 16
transformer blocks with self / reference / audio attention and GEGLU feed-forward, 21 motion modules, 8 heads,
cross-attention width 768), the real audio projection (depth 4, 768 wide, 5 tokens) and the real V-Kps guider
layout; only widths and the output resolution shrink.

=========  ===================  ====  =============  ============
name       UNet widths          res   VAE widths     audio in
=========  ===================  ====  =============  ============
smoke      32-64-128-128        128   32-64-64-64    64
proxy      64-128-256-256       256   32-64-64-64    64
full       320-640-1280-1280    512   128-256-512-512 768
=========  ===================  ====  =============  ============

Every parameter that a constructor leaves at zero (zero-initialised output projections, norm biases) is
re-randomised with N(0, 0.02), so that no path can be skipped because it happens to be zero in a random model.
"""

from __future__ import annotations

import math
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Size:
    unet: tuple[int, int, int, int]
    resolution: int
    vae: tuple[int, int, int, int]
    audio_in: int


SIZES = {
    "smoke": Size((32, 64, 128, 128), 128, (32, 64, 64, 64), 64),
    "proxy": Size((64, 128, 256, 256), 256, (32, 64, 64, 64), 64),
    "full": Size((320, 640, 1280, 1280), 512, (128, 256, 512, 512), 768),
}


def build_models(size_name: str, device: torch.device | str, dtype: torch.dtype, seed: int = 0) -> SimpleNamespace:
    """Random-weight networks of ``size_name`` built directly on ``device`` in ``dtype`` (no files written)."""
    from diffusers import AutoencoderKL

    from vexpress_model.models.config import UNetConfig, VExpressConstants
    from vexpress_model.models.small_nets import AudioProjection, VKpsGuider
    from vexpress_model.models.unet import DenoisingUNet, ReferenceNet

    size = SIZES[size_name]
    torch.manual_seed(seed)
    config = UNetConfig(block_out_channels=size.unet, attention_heads=(8, 8, 8, 8), cross_attention_dim=768)
    constants = VExpressConstants(
        kps_guider_conditioning_channels=size.unet[0],
        audio_proj_inp_dim=size.audio_in,
    )
    with torch.device(device):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=size.vae,
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=size.resolution,
        )
        networks = {
            "vae": vae,
            "reference_net": ReferenceNet(config, constants),
            "denoising_unet": DenoisingUNet(config, constants),
            "kps_guider": VKpsGuider.from_constants(constants),
            "audio_projection": AudioProjection.from_constants(constants, config.cross_attention_dim),
        }
    with torch.no_grad():
        for module in networks.values():
            for param in module.parameters():
                if not param.any():
                    param.normal_(0.0, 0.02)
            module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return SimpleNamespace(**networks, audio_encoder=None, audio_feature_extractor=None, constants=constants,
                           dtype=dtype)


def kps_track(num_frames: int, resolution: int) -> np.ndarray:
    """A smooth head-motion kps track ``[T, 3, 2]`` (eyes and nose), in pixels of a ``resolution`` square."""
    base = np.array([[0.42, 0.40], [0.58, 0.40], [0.50, 0.52]], dtype=np.float64) * resolution
    t = np.arange(num_frames, dtype=np.float64)[:, None, None] / 30.0
    wobble = np.concatenate([np.sin(2 * math.pi * 0.5 * t), 0.6 * np.cos(2 * math.pi * 0.3 * t)], axis=2)
    return (base[None] + 0.03 * resolution * wobble).astype(np.float32)


def kps_image_source(track: np.ndarray, resolution: int):
    """A callable ``(start, stop) -> uint8 [n, H, W, 3]`` drawing V-Kps images on demand."""
    from vexpress_model.conditioning.kps_images import draw_kps_image

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
