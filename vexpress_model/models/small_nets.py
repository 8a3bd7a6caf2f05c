"""The two small V-Express networks: the V-Kps guider (docs/spec.md §3.4) and the audio projection (§3.5)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .config import VExpressConstants


class VKpsGuider(nn.Module):
    """V-Kps images ``[B, 3, F, H, W]`` in [0, 1] -> features ``[B, C0, F, H/8, W/8]`` added after ``conv_in``.

    Per frame: ``conv_in`` + SiLU, then per width step a 3x3 conv and a stride-2 3x3 conv (each + SiLU), then
    ``conv_out`` (no activation). A 4-D input ``[N, 3, H, W]`` gives ``[N, C0, H/8, W/8]``.
    """

    def __init__(self, conditioning_channels: int = 320, block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
                 in_channels: int = 3) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for cin, cout in zip(block_out_channels[:-1], block_out_channels[1:]):
            self.blocks.append(nn.Conv2d(cin, cin, 3, padding=1))
            self.blocks.append(nn.Conv2d(cin, cout, 3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(block_out_channels[-1], conditioning_channels, 3, padding=1)

    @classmethod
    def from_constants(cls, constants: VExpressConstants) -> VKpsGuider:
        return cls(constants.kps_guider_conditioning_channels, constants.kps_guider_block_out_channels)

    def forward(self, kps_images: torch.Tensor) -> torch.Tensor:
        weight = self.conv_in.weight
        x = kps_images.to(weight.device, weight.dtype)
        video = x.ndim == 5
        if video:
            b, c, f, h, w = x.shape
            x = x.transpose(1, 2).reshape(b * f, c, h, w)
        x = F.silu(self.conv_in(x))
        for conv in self.blocks:
            x = F.silu(conv(x))
        x = self.conv_out(x)
        if video:
            x = x.reshape(b, f, *x.shape[1:]).transpose(1, 2).contiguous()
        return x


class PerceiverAttention(nn.Module):
    """IP-Adapter style perceiver attention: latents attend to ``[inputs; latents]``; no biases."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.dim_head = dim_head
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        n, length, _ = t.shape
        return t.view(n, length, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        n, length, _ = latents.shape
        q = self._heads(self.to_q(latents))
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        k, v = self._heads(k), self._heads(v)
        # Scale split between q and k (d^-1/4 each) and softmax in fp32, cast back: the original's numerics,
        # which keep fp16 logits in range (docs/spec.md §3.5). Sequences are tiny (5 queries, 15 keys), so no SDPA.
        scale = 1.0 / math.sqrt(math.sqrt(self.dim_head))
        weights = (q * scale) @ (k * scale).transpose(-2, -1)
        weights = torch.softmax(weights.float(), dim=-1).to(weights.dtype)
        out = (weights @ v).transpose(1, 2).reshape(n, length, -1)
        return self.to_out(out)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    # Keys ``.0`` (LayerNorm), ``.1`` and ``.3`` (bias-free linears); ``.2`` is the exact GELU.
    inner = dim * mult
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


class AudioProjection(nn.Module):
    """Perceiver resampler: per-frame wav2vec2 windows ``[N, 2*(2p+1), D_w2v]`` -> audio tokens ``[N, 2p+1, D]``.

    Leading dimensions are free: ``[B, F, 10, D_w2v]`` gives ``[B, F, 5, D]``.
    """

    def __init__(self, dim: int = 768, depth: int = 4, dim_head: int = 64, heads: int = 12, num_queries: int = 5,
                 embedding_dim: int = 768, output_dim: int = 768, ff_mult: int = 4, max_seq_len: int = 10) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.pos_emb = nn.Embedding(max_seq_len, embedding_dim)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            [nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)])
             for _ in range(depth)]
        )

    @classmethod
    def from_constants(cls, constants: VExpressConstants, cross_attention_dim: int) -> AudioProjection:
        return cls(
            dim=cross_attention_dim,
            depth=constants.audio_proj_depth,
            dim_head=constants.audio_proj_dim_head,
            heads=constants.audio_proj_heads,
            num_queries=constants.audio_num_queries,
            embedding_dim=constants.audio_proj_inp_dim,
            output_dim=cross_attention_dim,
            ff_mult=constants.audio_proj_ff_mult,
            max_seq_len=constants.audio_window_len,
        )

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        weight = self.proj_in.weight
        lead = windows.shape[:-2]
        x = windows.to(weight.device, weight.dtype).reshape(-1, *windows.shape[-2:])
        if x.shape[1] > self.pos_emb.num_embeddings:
            raise InputError(
                f"audio windows of {x.shape[1]} vectors, the projection was trained on {self.pos_emb.num_embeddings}"
            )
        # Learned position embedding added before proj_in (docs/spec.md §3.5).
        x = x + self.pos_emb(torch.arange(x.shape[1], device=x.device))
        latents = self.latents.expand(x.shape[0], -1, -1)
        x = self.proj_in(x)
        for attention, ff in self.layers:
            latents = attention(x, latents) + latents
            latents = ff(latents) + latents
        out = self.norm_out(self.proj_out(latents))
        return out.reshape(*lead, *out.shape[1:])
