"""The two V-Express UNets: the ReferenceNet (SD-1.5 2-D UNet that writes reference banks) and the denoising
UNet (SD-1.5 inflated over frames, AnimateDiff-v2 motion modules, reference and audio attention).

Both share one skeleton (:class:`_UNetSkeleton`) whose module names reproduce the released state dicts.
The denoising UNet takes ``[B, C, F, H, W]`` tensors but runs frames folded into the batch: every SD-1.5 layer of
the original's "inflated" UNet (convs, group norms, spatial attention) acts per frame, so only the motion modules
need the frame axis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from ..errors import FrameLimitError, ReferenceBankError
from .config import UNetConfig, VExpressConstants
from .deep_cache import CacheStep
from .layers import (
    CallState,
    MotionModule,
    SpatialTransformer,
    TransformerBlock,
)


def _resnet(config: UNetConfig, cin: int, cout: int) -> ResnetBlock2D:
    return ResnetBlock2D(
        in_channels=cin,
        out_channels=cout,
        temb_channels=config.time_embed_dim,
        eps=config.norm_eps,
        groups=config.norm_num_groups,
        dropout=0.0,
        time_embedding_norm="default",
        non_linearity="silu",
        output_scale_factor=1.0,
    )


class _Block(nn.Module):
    """One down, mid or up block; absent parts are simply not created (keys as in the checkpoints)."""

    def __init__(
        self,
        config: UNetConfig,
        resnet_channels: list[tuple[int, int]],
        channels: int,
        heads: int,
        has_attention: bool,
        video: bool,
        constants: VExpressConstants,
        downsample: bool = False,
        upsample: bool = False,
        attention_count: int | None = None,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([_resnet(config, cin, cout) for cin, cout in resnet_channels])
        count = len(resnet_channels) if attention_count is None else attention_count
        if has_attention:
            self.attentions = nn.ModuleList(
                [
                    SpatialTransformer(channels, heads, config.cross_attention_dim, config.norm_num_groups, video)
                    for _ in range(count)
                ]
            )
        else:
            self.attentions = None
        if video:
            self.motion_modules = nn.ModuleList(
                [
                    MotionModule(channels, constants.motion_module_heads, constants.motion_module_max_frames)
                    for _ in range(count)
                ]
            )
        else:
            self.motion_modules = None
        self.downsamplers = (
            nn.ModuleList([Downsample2D(channels, use_conv=True, out_channels=channels,
                                        padding=config.downsample_padding, name="op")])
            if downsample
            else None
        )
        self.upsamplers = (
            nn.ModuleList([Upsample2D(channels, use_conv=True, out_channels=channels)]) if upsample else None
        )


Attend = Callable[[SpatialTransformer, torch.Tensor], torch.Tensor]
Motion = Callable[[MotionModule, torch.Tensor], torch.Tensor] | None


class _UNetSkeleton(nn.Module):
    """SD-1.5 UNet layout shared by both nets; ``video`` adds motion modules, reference attention, conv_norm_out."""

    def __init__(self, config: UNetConfig, constants: VExpressConstants, video: bool) -> None:
        super().__init__()
        self.config = config
        self.constants = constants
        blocks = config.block_out_channels
        c0 = blocks[0]
        self.conv_in = nn.Conv2d(config.in_channels, c0, 3, padding=1)
        self.time_proj = Timesteps(c0, config.flip_sin_to_cos, config.freq_shift)
        self.time_embedding = TimestepEmbedding(c0, config.time_embed_dim)

        self.down_blocks = nn.ModuleList()
        cout = c0
        for i, has_attention in enumerate(config.down_block_attention):
            cin, cout = cout, blocks[i]
            layers = [(cin if j == 0 else cout, cout) for j in range(config.layers_per_block)]
            self.down_blocks.append(
                _Block(config, layers, cout, config.attention_heads[i], has_attention, video, constants,
                       downsample=i < len(blocks) - 1)
            )
        top = blocks[-1]
        self.mid_block = _Block(config, [(top, top), (top, top)], top, config.attention_heads[-1], True, video,
                                constants, attention_count=1)
        self.up_blocks = nn.ModuleList()
        rev = list(reversed(blocks))
        rev_heads = list(reversed(config.attention_heads))
        out_ch = rev[0]
        n_up = config.layers_per_block + 1
        for i, has_attention in enumerate(config.up_block_attention):
            prev, out_ch = out_ch, rev[i]
            skip_in = rev[min(i + 1, len(rev) - 1)]
            layers = [
                ((prev if j == 0 else out_ch) + (skip_in if j == n_up - 1 else out_ch), out_ch) for j in range(n_up)
            ]
            self.up_blocks.append(
                _Block(config, layers, out_ch, rev_heads[i], has_attention, video, constants,
                       upsample=i < len(blocks) - 1)
            )
        if video:
            self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, c0, eps=config.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(c0, config.out_channels, 3, padding=1)
        # Pair reference banks with blocks by module path (docs/spec.md §3.3: the original's width-sorted pairing ends
        # up pairing identical paths).
        for name, module in self.named_modules():
            if isinstance(module, TransformerBlock):
                module.bank_key = name

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def block_widths(self) -> dict[str, int]:
        """Channel width of every spatial transformer block, keyed by module path (the bank keys)."""
        return {
            m.bank_key: m.norm1.normalized_shape[0] for m in self.modules() if isinstance(m, TransformerBlock)
        }

    def _time_embedding(self, timestep: torch.Tensor | int | float, batch: int) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=self.device)
        if t.ndim == 0:
            t = t[None]
        t = t.reshape(-1).to(self.device)
        if t.numel() == 1:
            t = t.expand(batch)
        elif t.numel() != batch:
            raise ValueError(f"timestep has {t.numel()} values for a batch of {batch}")
        # Sinusoidal embedding in fp32, cast to the model dtype before the MLP (docs/spec.md §3.1).
        return self.time_embedding(self.time_proj(t).to(self.dtype))

    def _down_path(self, x: torch.Tensor, emb: torch.Tensor, attend: Attend, motion: Motion) -> Iterator[torch.Tensor]:
        """The down path's skip features in order, computed lazily (a cached step stops early)."""
        yield x
        for block in self.down_blocks:
            for j, resnet in enumerate(block.resnets):
                x = resnet(x, emb)
                if block.attentions is not None:
                    x = attend(block.attentions[j], x)
                if motion is not None and block.motion_modules is not None:
                    x = motion(block.motion_modules[j], x)
                yield x
            if block.downsamplers is not None:
                x = block.downsamplers[0](x)
                yield x

    def _run(self, x: torch.Tensor, emb: torch.Tensor, attend: Attend, motion: Motion,
             cache: CacheStep | None = None) -> torch.Tensor:
        """Down, mid and up blocks on ``(N, C, H, W)``; returns the last up block's output. With ``cache``
        (``deep_cache``) a full step stores the up path's state at the cache branch, a cached step runs only the
        layers above it."""
        levels = 2 ** (len(self.up_blocks) - 1)
        keep_sizes = any(s % levels for s in x.shape[-2:])
        reuse = cache is not None and cache.reuse
        # Up layers are numbered 0.. from the deepest; the branch's skip is consumed by layer ``enter``.
        enter = -1 if cache is None else self.num_skips - 2 - cache.cache.branch
        skips: list[torch.Tensor] = []
        for skip in self._down_path(x, emb, attend, motion):
            skips.append(skip)
            if reuse and len(skips) == self.num_skips - enter:
                break
        x = skips[-1]
        if not reuse:
            mid = self.mid_block
            x = mid.resnets[0](x, emb)
            x = attend(mid.attentions[0], x)
            if motion is not None and mid.motion_modules is not None:
                x = motion(mid.motion_modules[0], x)
            x = mid.resnets[1](x, emb)
        layer = 0
        for block in self.up_blocks:
            for j, resnet in enumerate(block.resnets):
                if layer < enter and reuse:
                    layer += 1
                    continue
                if layer == enter:
                    assert cache is not None
                    x = cache.exchange(x)
                layer += 1
                x = resnet(torch.cat([x, skips.pop()], dim=1), emb)
                if block.attentions is not None:
                    x = attend(block.attentions[j], x)
                if motion is not None and block.motion_modules is not None:
                    x = motion(block.motion_modules[j], x)
            if block.upsamplers is not None and not (reuse and layer <= enter):
                # Latent sizes not divisible by the total down factor: upsample to the skip's exact size.
                size = tuple(skips[-1].shape[-2:]) if keep_sizes else None
                x = block.upsamplers[0](x, output_size=size)
        return x

    @property
    def num_skips(self) -> int:
        """Skip features of the down path: its input, one per down layer, one per downsampler."""
        return 1 + sum(len(b.resnets) + (b.downsamplers is not None) for b in self.down_blocks)


class ReferenceNet(_UNetSkeleton):
    """SD-1.5 2-D UNet that returns the reference bank (docs/spec.md §3.2, §3.3).

    ``reference_net(latent [R, 4, h, w]) -> {block path: [R, h_l*w_l, C_l]}``: for each transformer block the
    ``norm2`` output after self-attention, at timestep 0 with a zero text context. ``conv_norm_out`` does not
    exist (as in the released file); ``conv_out`` is loaded but never run, since only the bank is used.
    """

    def __init__(self, config: UNetConfig, constants: VExpressConstants | None = None) -> None:
        super().__init__(config, constants or VExpressConstants(), video=False)

    def forward(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        latent = latent.to(self.device, self.dtype)
        bank: dict[str, torch.Tensor] = {}

        def attend(module: SpatialTransformer, x: torch.Tensor) -> torch.Tensor:
            x, entry = module.forward_write(x)
            bank[module.transformer_blocks[0].bank_key] = entry
            return x

        emb = self._time_embedding(0, latent.shape[0])
        self._run(self.conv_in(latent), emb, attend, None)
        return bank


@dataclass
class ReferenceContext:
    """The reference bank prepared for one video (``DenoisingUNet.prepare_reference``).

    ``bank[path]`` is ``[R, L, C]`` (R = 1: one reference for every batch item, or R = B: one per item);
    ``keys`` / ``values`` are the fast path's reference keys and values, projected once per video.
    """

    bank: dict[str, torch.Tensor]
    keys: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return next(iter(self.bank.values())).shape[0]

    def kv(self, key: str, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.keys[key], self.values[key]
        if k.device != device or k.dtype != dtype:
            # The UNet moved (offloading): move once and keep the moved copy.
            k, v = k.to(device, dtype), v.to(device, dtype)
            self.keys[key], self.values[key] = k, v
        return k, v

    def bank_per_frame(self, key: str, state: CallState) -> torch.Tensor:
        """The plain path's reader bank: per item the bank (zeros if unconditional), repeated per frame."""
        bank = self.bank[key]
        if bank.shape[0] == 1:
            bank = bank.expand(state.batch, -1, -1)
        if state.uncond_idx is not None:
            bank = bank.clone()
            bank[state.uncond_idx] = 0
        return bank.repeat_interleave(state.frames, dim=0)


class DenoisingUNet(_UNetSkeleton):
    """The V-Express denoising UNet (docs/spec.md §3.1, §3.3, §3.6).

    Call: ``unet(sample [B, 4, F, h, w], timestep, audio_tokens [B, F, n, D], kps_features [B, C0, F, h, w] | None,
    reference, *, reference_attention_weight=1.0, audio_attention_weight=1.0, uncond=None) -> [B, 4, F, h, w]``
    (v-prediction). Items flagged in ``uncond`` (bool ``[B]``) are CFG-unconditional: zero kps features, zero
    audio tokens and a zero reference bank, whatever was passed for them.

    ``fast_paths`` (default True) selects the fast path: reference keys/values projected once per video, and the
    unconditional reference/audio attentions replaced by what they reduce to (``weight * to_out bias``).
    ``fast_paths = False`` computes everything as the original does; both agree to float rounding.
    """

    def __init__(self, config: UNetConfig, constants: VExpressConstants | None = None) -> None:
        super().__init__(config, constants or VExpressConstants(), video=True)
        self.fast_paths = True

    @property
    def max_frames(self) -> int:
        return self.constants.motion_module_max_frames

    @property
    def cache_branches(self) -> int:
        """How many DeepCache branches there are (``feature_cache`` branch 0 .. this - 1, shallowest first)."""
        return self.num_skips - 1

    def cached_feature_bytes(self, branch: int, latent_hw: tuple[int, int]) -> int:
        """Bytes of the up-path state one frame of one batch item stores at DeepCache ``branch`` (``deep_cache``)."""
        skip = branch + 1
        channels, (h, w), index = self.config.block_out_channels[0], latent_hw, 0
        for block in self.down_blocks:
            for resnet in block.resnets:
                index += 1
                if index == skip:
                    channels = resnet.out_channels
            if block.downsamplers is not None:
                index += 1
                if index == skip:
                    channels = block.resnets[-1].out_channels
                if index <= skip:
                    h, w = (h + 1) // 2, (w + 1) // 2  # a stride-2 conv with padding 1
        up_resnets = [r for block in self.up_blocks for r in block.resnets]
        state_channels = up_resnets[self.num_skips - 2 - branch].in_channels - channels
        return state_channels * h * w * self.dtype.itemsize

    @torch.no_grad()
    def prepare_reference(self, bank: dict[str, torch.Tensor]) -> ReferenceContext:
        """Pair a ReferenceNet bank with this UNet's blocks (by module path) and project the reference K/V."""
        widths = self.block_widths()
        missing = sorted(set(widths) - set(bank))
        extra = sorted(set(bank) - set(widths))
        if missing or extra:
            raise ReferenceBankError(
                f"the reference bank does not match the denoising UNet: missing blocks {missing[:3]}, unexpected "
                f"{extra[:3]}; the ReferenceNet and the denoising UNet must come from the same model folder"
            )
        prepared: dict[str, torch.Tensor] = {}
        batch = None
        for key, width in widths.items():
            value = bank[key]
            if value.ndim != 3 or value.shape[-1] != width or (batch is not None and value.shape[0] != batch):
                raise ReferenceBankError(
                    f"reference bank entry {key!r} has shape {list(value.shape)}, expected [R, tokens, {width}] "
                    "with the same R for every block"
                )
            batch = value.shape[0]
            prepared[key] = value.to(self.device, self.dtype)
        context = ReferenceContext(bank=prepared)
        for name, module in self.named_modules():
            if isinstance(module, TransformerBlock):
                context.keys[name], context.values[name] = module.attn1_5.project_kv(prepared[name])
        return context

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        audio_tokens: torch.Tensor,
        kps_features: torch.Tensor | None,
        reference: ReferenceContext,
        *,
        reference_attention_weight: float = 1.0,
        audio_attention_weight: float = 1.0,
        uncond: torch.Tensor | None = None,
        feature_cache: CacheStep | None = None,
    ) -> torch.Tensor:
        if sample.ndim != 5:
            raise ValueError(f"sample must be [B, C, F, h, w], got {list(sample.shape)}")
        b, c, f, h, w = sample.shape
        if f > self.max_frames:
            raise FrameLimitError(
                f"{f} frames in one denoising call, but the motion modules cover at most {self.max_frames} "
                f"(position-encoding length); use context windows of at most {self.max_frames} frames"
            )
        if audio_tokens.ndim != 4 or tuple(audio_tokens.shape[:2]) != (b, f):
            raise ValueError(f"audio_tokens must be [B={b}, F={f}, n, D], got {list(audio_tokens.shape)}")
        if reference.batch not in (1, b):
            raise ReferenceBankError(f"reference bank batch {reference.batch} fits neither 1 nor the batch {b}")
        device, dtype = self.device, self.dtype
        fast = bool(self.fast_paths)

        flags = [False] * b if uncond is None else [bool(v) for v in torch.as_tensor(uncond).reshape(-1).tolist()]
        if len(flags) != b:
            raise ValueError(f"uncond has {len(flags)} entries for a batch of {b}")
        cond_list = [i for i, u in enumerate(flags) if not u]
        uncond_list = [i for i, u in enumerate(flags) if u]
        cond_idx = torch.tensor(cond_list, device=device) if cond_list and uncond_list else None
        uncond_idx = torch.tensor(uncond_list, device=device) if uncond_list else None

        x = sample.to(device, dtype).transpose(1, 2).reshape(b * f, c, h, w)
        audio = audio_tokens.to(device, dtype)
        if uncond_idx is not None and not fast:
            audio = audio.index_fill(0, uncond_idx, 0)
        audio = audio.reshape(b * f, *audio.shape[2:])
        emb = self._time_embedding(timestep, b).repeat_interleave(f, dim=0)

        x = self.conv_in(x)
        if kps_features is not None:
            kps = kps_features.to(device, dtype).transpose(1, 2)  # [B, F, C0, h, w]
            if uncond_idx is None:
                x = x + kps.reshape(x.shape)
            elif fast:
                # Add the features to the conditional items only (nothing to add when all are unconditional).
                if cond_idx is not None:
                    x = x.reshape(b, -1).index_add(0, cond_idx, kps.reshape(b, -1)[cond_idx]).view_as(x)
            else:
                x = x + kps.index_fill(0, uncond_idx, 0).reshape(x.shape)

        state = CallState(
            batch=b,
            frames=f,
            cond_idx=cond_idx,
            uncond_idx=uncond_idx,
            audio=audio,
            reference=reference,
            reference_weight=float(reference_attention_weight),
            audio_weight=float(audio_attention_weight),
            fast=fast,
        )
        x = self._run(
            x,
            emb,
            lambda module, t: module.forward_read(t, state),
            lambda module, t: module(t, b, f),
            feature_cache,
        )
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return x.reshape(b, f, -1, h, w).transpose(1, 2).contiguous()
