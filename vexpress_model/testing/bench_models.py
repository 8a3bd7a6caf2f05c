"""Random-weight V-Express networks of the real topology at benchmark sizes, built in memory (no files).

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

from dataclasses import dataclass
from types import SimpleNamespace

import torch


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

    from ..models.config import UNetConfig, VExpressConstants
    from ..models.small_nets import AudioProjection, VKpsGuider
    from ..models.unet import DenoisingUNet, ReferenceNet

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
