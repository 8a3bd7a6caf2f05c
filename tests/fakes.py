"""Small stand-in networks with the interfaces of ``vexpress_model.models`` (docs/ARCHITECTURE.md, "Networks").

They let the pipeline tests run in milliseconds and exercise every path the pipeline depends on: temporal mixing
with a position encoding (so window placement matters), reference attention against a bank, per-frame audio
attention, additive kps features, and a ``fast_paths`` switch with the same semantics as the real UNet (plain: the
unconditional items attend to a zero bank and the zero audio tokens they are given; fast: the constants those
reduce to). ``run_stages`` runs the stages up to the sampled latents on them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn


class FakeVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 8, stride=8)
        self.dec = nn.ConvTranspose2d(4, 3, 8, stride=8)

    def encode(self, x: torch.Tensor) -> Any:
        mean, _ = self.enc(x).chunk(2, dim=1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean))

    def decode(self, z: torch.Tensor) -> Any:
        return SimpleNamespace(sample=torch.tanh(self.dec(z)) * 1.2)


class FakeReferenceNet(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(4, channels)

    def forward(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = latent.flatten(2).transpose(1, 2)  # [1, hw, 4]
        return {"blocks.0": self.proj(tokens), "blocks.1": torch.sin(self.proj(tokens))}


class FakeGuider(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, channels, (1, 8, 8), stride=(1, 8, 8))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images * 2.0)


class FakeAudioProjection(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.seq = nn.Linear(10, 5)
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(self.seq(windows.transpose(1, 2)).transpose(1, 2)))


@dataclass
class FakeReferenceContext:
    bank: dict[str, torch.Tensor]
    keys: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class FakeUNetOptions:
    """The keyword options of a UNet call (``UNetLike.__call__``), with the real UNet's defaults; an unknown keyword
    is a TypeError, as it is for the real UNet."""

    reference_attention_weight: float = 1.0
    audio_attention_weight: float = 1.0
    uncond: torch.Tensor | None = None  # [B] bool: the CFG unconditional items
    feature_cache: Any = None  # DeepCache: never passed to the stand-in (it has no cached_feature_bytes)


class FakeUNet(nn.Module):
    """``unet(sample, t, audio_tokens, kps_features, reference, **options)`` -> v-prediction, like
    ``models.DenoisingUNet``; ``options``: :class:`FakeUNetOptions`."""

    def __init__(self, channels: int = 16, audio_dim: int = 12) -> None:
        super().__init__()
        c = channels
        self.fast_paths = True
        self.calls = 0
        self.conv_in = nn.Conv3d(4, c, (1, 3, 3), padding=(0, 1, 1))
        self.time = nn.Linear(8, c)
        self.ref_q, self.ref_k, self.ref_v = (nn.Linear(c, c, bias=False) for _ in range(3))
        self.ref_out = nn.Linear(c, c)
        self.aud_q = nn.Linear(c, c, bias=False)
        self.aud_k = nn.Linear(audio_dim, c, bias=False)
        self.aud_v = nn.Linear(audio_dim, c, bias=False)
        self.aud_out = nn.Linear(c, c)
        self.tmp_qkv = nn.Linear(c, 3 * c, bias=False)
        self.tmp_out = nn.Linear(c, c)
        self.conv_out = nn.Conv3d(c, 4, (1, 3, 3), padding=(0, 1, 1))
        position = torch.arange(32, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, c, 2, dtype=torch.float32) * (-math.log(10000.0) / c))
        pe = torch.zeros(32, c)
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq)
        self.register_buffer("pe", pe)

    def prepare_reference(self, bank: dict[str, torch.Tensor]) -> FakeReferenceContext:
        context = FakeReferenceContext(bank=bank)
        if self.fast_paths:
            for key, value in bank.items():
                context.keys[key] = self.ref_k(value)
                context.values[key] = self.ref_v(value)
        return context

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        audio_tokens: torch.Tensor,
        kps_features: torch.Tensor | None,
        reference: FakeReferenceContext,
        **options: Any,
    ) -> torch.Tensor:
        call = FakeUNetOptions(**options)
        self.calls += 1
        b, _, f, h, w = sample.shape
        assert f <= 32
        x = self.conv_in(sample)
        if kps_features is not None:
            x = x + kps_features
        t = torch.as_tensor(timestep, dtype=torch.float32, device=sample.device).reshape(-1)[:1]
        freqs = torch.arange(4, device=sample.device, dtype=torch.float32)
        t_emb = torch.cat([torch.sin(t[:, None] / (10 ** freqs)), torch.cos(t[:, None] / (10 ** freqs))], dim=1)
        x = x + self.time(t_emb.to(x.dtype))[:, :, None, None, None]
        c = x.shape[1]
        tokens = x.permute(0, 2, 3, 4, 1).reshape(b * f, h * w, c)
        uncond = call.uncond
        if uncond is None:
            uncond = torch.zeros(b, dtype=torch.bool, device=sample.device)
        uncond_frames = uncond.repeat_interleave(f)

        # Reference attention over every bank entry.
        ref_sum = torch.zeros_like(tokens)
        for key, bank in reference.bank.items():
            q = self.ref_q(tokens)
            if self.fast_paths:
                k = reference.keys[key].expand(b * f, -1, -1)
                v = reference.values[key].expand(b * f, -1, -1)
                out = self.ref_out(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), -1) @ v)
                out = torch.where(uncond_frames[:, None, None], self.ref_out.bias.expand_as(out), out)
            else:
                full = bank.expand(b * f, -1, -1) * (~uncond_frames)[:, None, None].to(bank.dtype)
                k, v = self.ref_k(full), self.ref_v(full)
                out = self.ref_out(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), -1) @ v)
            ref_sum = ref_sum + out
        tokens = tokens + call.reference_attention_weight * ref_sum

        # Audio attention: each frame attends to its own tokens.
        audio = audio_tokens.reshape(b * f, audio_tokens.shape[2], audio_tokens.shape[3])
        q = self.aud_q(tokens)
        out = self.aud_out(torch.softmax(q @ self.aud_k(audio).transpose(1, 2) / math.sqrt(c), -1) @ self.aud_v(audio))
        if self.fast_paths:
            out = torch.where(uncond_frames[:, None, None], self.aud_out.bias.expand_as(out), out)
        tokens = tokens + call.audio_attention_weight * out

        # Temporal self-attention with a position encoding (window placement matters, like the motion modules).
        seq = tokens.reshape(b, f, h * w, c).transpose(1, 2).reshape(b * h * w, f, c) + self.pe[:f]
        q, k, v = self.tmp_qkv(seq).chunk(3, dim=-1)
        seq = seq + self.tmp_out(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), -1) @ v)
        x = seq.reshape(b, h, w, f, c).permute(0, 4, 3, 1, 2)
        return self.conv_out(torch.tanh(x))


def make_fake_models(seed: int = 0, channels: int = 16, audio_in: int = 6, audio_dim: int = 12) -> SimpleNamespace:
    torch.manual_seed(seed)
    models = SimpleNamespace(
        vae=FakeVAE(),
        reference_net=FakeReferenceNet(channels),
        denoising_unet=FakeUNet(channels, audio_dim),
        kps_guider=FakeGuider(channels),
        audio_projection=FakeAudioProjection(audio_in, audio_dim),
        audio_encoder=None,
        audio_feature_extractor=None,
        constants=SimpleNamespace(num_pad_audio_frames=2),
        dtype=torch.float32,
    )
    for module in (models.vae, models.reference_net, models.denoising_unet, models.kps_guider, models.audio_projection):
        module.eval().requires_grad_(False)
        # Give the biases some weight so the constant unconditional attentions are not trivially zero.
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.3)
    return models


def make_inputs(num_frames: int, size: int = 32, seed: int = 0, audio_in: int = 6, fixed_face: bool = False):
    """(reference image uint8 [H,W,3], kps images uint8 [T,H,W,3], audio windows float32 [T,10,D])."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (size, size, 3), generator=generator, dtype=torch.uint8)
    if fixed_face:
        kps = torch.randint(0, 256, (1, size, size, 3), generator=generator, dtype=torch.uint8).expand(
            num_frames, -1, -1, -1
        ).contiguous()
    else:
        kps = torch.randint(0, 256, (num_frames, size, size, 3), generator=generator, dtype=torch.uint8)
    windows = torch.randn((num_frames, 10, audio_in), generator=generator)
    return image.numpy(), kps.numpy(), windows.numpy()


def run_stages(pipeline: Any, num_frames: int, windows: Any, settings: Any, size: int = 32,
               fixed_face: bool = False, hooks: Any = None) -> tuple[torch.Tensor, tuple[Any, Any, Any]]:
    """The pipeline's stages up to the sampled latents on :func:`make_inputs`; returns the latents and the
    conditions (reference state, kps features, audio tokens)."""
    image, kps_images, audio = make_inputs(num_frames, size=size, fixed_face=fixed_face)
    reference = pipeline.encode_reference(image)
    kps = pipeline.encode_kps(kps_images, num_frames)
    tokens = pipeline.project_audio(audio)
    latents = pipeline.sample(reference, kps, tokens, windows, settings, hooks)
    return latents, (reference, kps, tokens)


def fake_features(num_frames: int, audio_in: int = 6, seed: int = 0) -> Any:
    """wav2vec2-like features ``[2 * num_frames, audio_in]`` (two per frame at the fakes' 0.4 s / 12 frames) as the
    typed audio ``generate`` takes, for pipelines over :func:`make_fake_models` (which have no wav2vec2)."""
    from vexpress_model.conditioning.audio_features import Wav2Vec2Features

    generator = torch.Generator().manual_seed(seed)
    return Wav2Vec2Features(torch.randn((2 * num_frames, audio_in), generator=generator).numpy())


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with one torch thread (outputs compared bit for bit: reductions differ with the thread count;
    the default-output fixture was dumped so), then restore the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
