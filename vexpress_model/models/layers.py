"""Attention layers of the V-Express UNets: spatial transformer blocks (self, reference, audio attention) and the
AnimateDiff-v2 motion module (temporal self-attention).

State-dict names follow the released checkpoints exactly (``attn1``, ``attn1_5``, ``attn2``, ``norm1_5``,
``to_out.0``, ``motion_modules.N.temporal_transformer...``). The attention module is our own rather than
diffusers' ``Attention`` because V-Express needs the projections separately: reference keys/values are projected
once per video and the unconditional branches reduce to the output bias.

Internal layout: the UNets run frames folded into the batch, ``(B*F, C, H, W)`` (every SD-1.5 layer is per
frame; only the motion module mixes frames), and transformer tokens are ``(B*F, H*W, C)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v projections and a biased output projection (SD-1.5 layout)."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: int | None = None) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        # A ModuleList so the keys read ``to_out.0.*`` like diffusers' (index 1 was a dropout there).
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    @property
    def out_bias(self) -> torch.Tensor:
        """What the attention returns for all-zero keys and values (q/k/v have no bias): ``to_out`` of zeros."""
        return self.to_out[0].bias

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_k(context), self.to_v(context)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``q [N, L, inner]`` against ``k, v [N or 1, S, inner]`` -> ``[N, L, query_dim]`` (SDPA, scale d^-0.5)."""
        n, length, inner = q.shape
        qh = q.view(n, length, self.heads, self.dim_head).transpose(1, 2)
        kh = k.view(k.shape[0], k.shape[1], self.heads, self.dim_head).transpose(1, 2)
        vh = v.view(v.shape[0], v.shape[1], self.heads, self.dim_head).transpose(1, 2)
        if kh.shape[0] != n:
            kh = kh.expand(n, -1, -1, -1)
            vh = vh.expand(n, -1, -1, -1)
        out = F.scaled_dot_product_attention(qh, kh, vh)
        out = out.transpose(1, 2).reshape(n, length, inner)
        return self.to_out[0](out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.project_kv(x if context is None else context)
        return self.attend(self.to_q(x), k, v)


@dataclass
class CallState:
    """Per-call data the denoising UNet hands to its transformer blocks (not stored on the modules)."""

    batch: int
    frames: int
    cond_idx: torch.Tensor | None  # batch items with conditions; None = all of them
    uncond_idx: torch.Tensor | None  # CFG-unconditional batch items; None = none
    audio: torch.Tensor  # [B*F, n, D] (uncond rows already zero in the plain path)
    reference: object  # ReferenceContext (typed loosely to avoid an import cycle)
    reference_weight: float
    audio_weight: float
    fast: bool

    @property
    def all_cond(self) -> bool:
        return self.uncond_idx is None

    @property
    def all_uncond(self) -> bool:
        return self.cond_idx is None and self.uncond_idx is not None


def _blend(
    h: torch.Tensor,
    state: CallState,
    constant: torch.Tensor,
    compute_cond: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``h + update`` where CFG-unconditional items get ``constant`` and the others ``compute_cond(rows)``.

    ``h`` is ``[B, T, C]`` (frames folded into T); ``compute_cond`` receives the conditional items' rows.
    """
    if state.all_cond:
        return h + compute_cond(h)
    if state.cond_idx is None:
        return h + constant
    out = torch.empty_like(h)
    out[state.uncond_idx] = h[state.uncond_idx] + constant
    out[state.cond_idx] = h[state.cond_idx] + compute_cond(h[state.cond_idx])
    return out


class TransformerBlock(nn.Module):
    """SD-1.5 ``BasicTransformerBlock``, plus V-Express's reference attention in the denoising UNet.

    Denoising UNet (docs/spec.md §3.1): ``h += attn1(LN1 h)``; ``h += w_ref * attn1_5(LN1_5 h, bank)``;
    ``h += w_aud * attn2(LN2 h, audio)``; ``h += FF(LN3 h)``.
    ReferenceNet (docs/spec.md §3.3): ``h += attn1(LN1 h)``; the bank entry is ``LN2 h``; then the zero-context
    cross-attention (= its output bias) and the feed-forward.
    """

    def __init__(self, dim: int, heads: int, cross_attention_dim: int, reference_attention: bool) -> None:
        super().__init__()
        dim_head = dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head)
        self.has_reference_attention = reference_attention
        if reference_attention:
            self.norm1_5 = nn.LayerNorm(dim)
            self.attn1_5 = Attention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, dim_head, context_dim=cross_attention_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        # Module path inside its UNet ("down_blocks.0.attentions.0.transformer_blocks.0"); set by the UNet after
        # construction. Reference banks are paired with blocks by this path.
        self.bank_key = ""

    # -- ReferenceNet ------------------------------------------------------------------------------------------
    def forward_write(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = h + self.attn1(self.norm1(h))
        entry = self.norm2(h)
        # attn2 sees an all-zero text context: zero keys and values, so it returns exactly its output bias
        # whatever the context width (parity README §1).
        h = h + self.attn2.out_bias
        h = h + self.ff(self.norm3(h))
        return h, entry

    # -- denoising UNet ----------------------------------------------------------------------------------------
    def forward_read(self, h: torch.Tensor, state: CallState) -> torch.Tensor:
        h = h + self.attn1(self.norm1(h))
        h = self._reference_attention(h, state)
        h = self._audio_attention(h, state)
        return h + self.ff(self.norm3(h))

    def _reference_attention(self, h: torch.Tensor, state: CallState) -> torch.Tensor:
        ref = state.reference
        w = state.reference_weight
        bf, tokens, channels = h.shape
        if not state.fast:
            # As the original: the bank (zeros for unconditional items) repeated per frame, K/V projected now.
            bank = ref.bank_per_frame(self.bank_key, state)  # [B*F, L, C]
            return h + w * self.attn1_5(self.norm1_5(h), bank)
        keys, values = ref.kv(self.bank_key, h.device, h.dtype)  # [R, L, inner], projected once per video

        def cond(rows: torch.Tensor) -> torch.Tensor:
            # All frames of one item share the same keys/values: fold frames into the query length, so the
            # bank is neither repeated per frame nor projected again.
            q = self.attn1_5.to_q(self.norm1_5(rows))
            k, v = keys, values
            if k.shape[0] != 1 and not state.all_cond:
                # One reference per batch item: keep the conditional items' keys/values.
                k, v = k[state.cond_idx], v[state.cond_idx]
            return w * self.attn1_5.attend(q, k, v)

        out = _blend(h.view(state.batch, state.frames * tokens, channels), state, w * self.attn1_5.out_bias, cond)
        return out.view(bf, tokens, channels)

    def _audio_attention(self, h: torch.Tensor, state: CallState) -> torch.Tensor:
        w = state.audio_weight
        bf, tokens, channels = h.shape
        if not state.fast:
            return h + w * self.attn2(self.norm2(h), state.audio)
        frames = state.frames
        audio = state.audio.reshape(state.batch, frames, *state.audio.shape[1:])

        def cond(rows: torch.Tensor) -> torch.Tensor:
            n = rows.shape[0]
            ctx = audio if state.all_cond else audio[state.cond_idx]
            x = rows.reshape(n * frames, tokens, channels)
            y = self.attn2(self.norm2(x), ctx.reshape(n * frames, *ctx.shape[2:]))
            return (w * y).view(n, frames * tokens, channels)

        out = _blend(h.view(state.batch, frames * tokens, channels), state, w * self.attn2.out_bias, cond)
        return out.view(bf, tokens, channels)


class SpatialTransformer(nn.Module):
    """SD-1.5 ``Transformer2DModel`` (conv projections), applied per frame: ``attentions.N`` in the UNets."""

    def __init__(
        self, channels: int, heads: int, cross_attention_dim: int, groups: int, reference_attention: bool
    ) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(channels, heads, cross_attention_dim, reference_attention)]
        )
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        n, c, hh, ww = x.shape
        # Contiguous tokens: the attention helpers regroup them as [B, F*H*W, C] with views.
        return self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(n, hh * ww, c).contiguous()

    def _untokens(self, h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        n, c, hh, ww = like.shape
        return self.proj_out(h.reshape(n, hh, ww, c).permute(0, 3, 1, 2).contiguous()) + like

    def forward_write(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, entry = self.transformer_blocks[0].forward_write(self._tokens(x))
        return self._untokens(h, x), entry

    def forward_read(self, x: torch.Tensor, state: CallState) -> torch.Tensor:
        h = self.transformer_blocks[0].forward_read(self._tokens(x), state)
        return self._untokens(h, x)


def sinusoidal_position_encoding(max_len: int, dim: int) -> torch.Tensor:
    """``pe[0, p, 2k] = sin(p * 10000^(-2k/dim))``, ``pe[0, p, 2k+1] = cos(...)`` (docs/spec.md §3.6),
    ``[1, max_len, dim]``."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * div)
    pe[0, :, 1::2] = torch.cos(position * div)
    return pe


class PositionalEncoding(nn.Module):
    """The motion module's temporal position encoding; ``pe`` is a persistent buffer, as in the checkpoints."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_position_encoding(max_len, dim))


class TemporalAttention(Attention):
    """AnimateDiff "Temporal_Self" attention: self-attention across frames with the encoding added to its input."""

    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__(dim, heads, dim // heads)
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B*H*W, F, C]; q, k and v all see the position encoding (docs/spec.md §3.6).
        x = x + self.pos_encoder.pe[:, : x.shape[1]].to(x.dtype)
        return super().forward(x)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads, max_len) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            h = h + attention(norm(h))
        return h + self.ff(self.ff_norm(h))


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, max_len: int, groups: int = 32) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, max_len)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        bf, c, hh, ww = x.shape
        hw = hh * ww
        # Per-frame GroupNorm, then tokens ordered (B, H*W, F, C) so attention runs over frames. The linear
        # layers and LayerNorms are per token, so applying them in this order equals the original's.
        h = self.norm(x).permute(0, 2, 3, 1).reshape(batch, frames, hw, c).transpose(1, 2)
        h = self.proj_in(h).reshape(batch * hw, frames, c)
        for block in self.transformer_blocks:
            h = block(h)
        h = self.proj_out(h)
        h = h.view(batch, hw, frames, c).transpose(1, 2).reshape(bf, hh, ww, c).permute(0, 3, 1, 2)
        return h + x


class MotionModule(nn.Module):
    """AnimateDiff-v2 ``VanillaTemporalModule`` (one temporal transformer, two temporal self-attentions)."""

    def __init__(self, channels: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, max_len)

    def forward(self, x: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        return self.temporal_transformer(x, batch, frames)
