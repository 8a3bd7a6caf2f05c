"""Network sizes: the SD-1.5 UNet config and the V-Express constants that shapes cannot tell.

Two sources describe a V-Express model folder:

* the SD-1.5 UNet ``config.json`` (``stable-diffusion-v1-5/unet/config.json``), which sizes both UNets;
* :class:`VExpressConstants`, the numbers the original ``inference.py`` hard-codes (guider widths, audio
  projection heads, ...). Their defaults are the released model's values; a tiny test model overrides them with
  an optional ``v-express/vexpress_config.json`` (see the parity README).

Everything else (the key set and every shape) is checked against the checkpoint files when loading.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelFolderError

logger = logging.getLogger("vexpress.models")

# The SD-1.5 UNet config shipped with the package, used when a folder has none (ComfyUI-style folders).
SHIPPED_UNET_CONFIG = Path(__file__).with_name("sd15_unet_config.json")
SHIPPED_VAE_CONFIG = Path(__file__).with_name("sd_vae_ft_mse_config.json")

_DOWN_TYPES = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
_UP_TYPES = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}


def read_json_object(path: Path, fix: str) -> dict[str, Any]:
    """A JSON file that must hold an object; a ModelFolderError naming the file and ``fix`` otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"{path}: not a readable JSON file ({exc}); {fix}") from exc
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path}: expected a JSON object; {fix}")
    return data


@dataclass(frozen=True)
class UNetConfig:
    """The subset of a diffusers ``UNet2DConditionModel`` config that SD-1.5-type UNets use.

    ``attention_heads`` is the config's ``attention_head_dim``: for SD-1.5 diffusers reads that field as the
    number of heads (8), and so did the original V-Express code.
    """

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_attention: tuple[bool, ...] = (True, True, True, False)
    up_block_attention: tuple[bool, ...] = (False, True, True, True)
    layers_per_block: int = 2
    attention_heads: tuple[int, ...] = (8, 8, 8, 8)
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> UNetConfig:
        """Parse a diffusers UNet config dict; refuse settings V-Express never used (SD-2, SDXL, ...)."""

        def bad(what: str) -> ModelFolderError:
            return ModelFolderError(
                f"{source}: {what}. V-Express needs the Stable Diffusion 1.5 UNet config "
                "(stable-diffusion-v1-5/unet/config.json); delete this file to use the copy shipped with the package."
            )

        try:
            blocks = tuple(int(c) for c in raw.get("block_out_channels", cls.block_out_channels))
            down_types = list(raw.get("down_block_types", ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]))
            up_types = list(raw.get("up_block_types", ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3))
            heads_raw = raw.get("num_attention_heads") or raw.get("attention_head_dim", 8)
            layers = raw.get("layers_per_block", 2)
        except (TypeError, ValueError) as exc:
            raise bad(f"unreadable value ({exc})") from exc
        if len(down_types) != len(blocks) or len(up_types) != len(blocks):
            raise bad("down_block_types / up_block_types / block_out_channels have different lengths")
        unknown = [t for t in down_types if t not in _DOWN_TYPES] + [t for t in up_types if t not in _UP_TYPES]
        if unknown:
            raise bad(f"unsupported block types {unknown}")
        mid = raw.get("mid_block_type", "UNetMidBlock2DCrossAttn")
        if mid not in (None, "UNetMidBlock2DCrossAttn"):
            raise bad(f"unsupported mid_block_type {mid!r}")
        if not isinstance(layers, int):
            raise bad("layers_per_block must be one integer")
        heads = (int(heads_raw),) * len(blocks) if isinstance(heads_raw, int) else tuple(int(h) for h in heads_raw)
        if len(heads) != len(blocks):
            raise bad("attention_head_dim has a different length than block_out_channels")
        for name, allowed in (
            ("use_linear_projection", (None, False)),
            ("only_cross_attention", (None, False)),
            ("upcast_attention", (None, False)),
            ("dual_cross_attention", (None, False)),
            ("class_embed_type", (None,)),
            ("addition_embed_type", (None,)),
            ("center_input_sample", (None, False)),
            ("transformer_layers_per_block", (None, 1)),
            ("resnet_time_scale_shift", (None, "default")),
            ("act_fn", (None, "silu")),
            ("mid_block_scale_factor", (None, 1, 1.0)),
        ):
            if raw.get(name) not in allowed:
                raise bad(f"{name} = {raw.get(name)!r} is not supported")
        cross = raw.get("cross_attention_dim", 768)
        if not isinstance(cross, int):
            raise bad("cross_attention_dim must be one integer")
        return cls(
            in_channels=int(raw.get("in_channels", 4)),
            out_channels=int(raw.get("out_channels", 4)),
            block_out_channels=blocks,
            down_block_attention=tuple(_DOWN_TYPES[t] for t in down_types),
            up_block_attention=tuple(_UP_TYPES[t] for t in up_types),
            layers_per_block=layers,
            attention_heads=heads,
            cross_attention_dim=cross,
            norm_num_groups=int(raw.get("norm_num_groups", 32)),
            norm_eps=float(raw.get("norm_eps", 1e-5)),
            flip_sin_to_cos=bool(raw.get("flip_sin_to_cos", True)),
            freq_shift=int(raw.get("freq_shift", 0)),
            downsample_padding=int(raw.get("downsample_padding", 1)),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> UNetConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelFolderError(f"UNet config not found: {path}") from exc
        except (OSError, ValueError) as exc:
            raise ModelFolderError(f"{path}: not a readable JSON file ({exc}); re-download it or delete it") from exc
        if not isinstance(raw, dict):
            raise ModelFolderError(f"{path}: expected a JSON object")
        return cls.from_dict(raw, source=str(path))


@dataclass(frozen=True)
class VExpressConstants:
    """Sizes of the V-Express-specific networks that the weight shapes cannot determine (or that the original
    code hard-codes). Defaults are the released model's values (docs/spec.md §3.4–§3.6, parity README §1)."""

    kps_guider_conditioning_channels: int = 320
    kps_guider_block_out_channels: tuple[int, ...] = (16, 32, 96, 256)
    audio_proj_inp_dim: int = 768
    audio_proj_depth: int = 4
    audio_proj_dim_head: int = 64
    audio_proj_heads: int = 12
    audio_proj_ff_mult: int = 4
    num_pad_audio_frames: int = 2
    reference_net_encoder_hidden_dim: int = 768
    # inference_v2.yaml's motion-module settings (not in vexpress_config.json; the same for every size).
    motion_module_heads: int = 8
    motion_module_max_frames: int = 32
    # Which keys came from vexpress_config.json (for error messages); not a size.
    overridden: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def audio_num_queries(self) -> int:
        """Audio tokens per frame (5 for num_pad 2)."""
        return 2 * self.num_pad_audio_frames + 1

    @property
    def audio_window_len(self) -> int:
        """wav2vec2 vectors per frame window (10 for num_pad 2)."""
        return 2 * self.audio_num_queries

    def describe(self, name: str) -> str:
        """Where the value of constant ``name`` came from, for error messages."""
        return "vexpress_config.json" if name in self.overridden else "the built-in default of the released model"

    @classmethod
    def from_json(cls, path: str | Path | None) -> VExpressConstants:
        """Defaults, overridden by the keys of ``path`` when it is given and exists."""
        if path is None or not Path(path).is_file():
            return cls()
        path = Path(path)
        raw = read_json_object(path, "fix or delete it")
        names = {f.name: f for f in dataclasses.fields(cls) if f.name != "overridden"}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in names:
                # Forward compatibility: a newer writer may add keys; they cannot change what we build.
                logger.warning("%s: ignoring unknown key %r", path, key)
                continue
            try:
                if key == "kps_guider_block_out_channels":
                    values[key] = tuple(int(v) for v in value)
                    if not values[key]:
                        raise ValueError("empty list")
                else:
                    if isinstance(value, bool) or int(value) != value:
                        raise ValueError(f"not an integer: {value!r}")
                    values[key] = int(value)
                    if values[key] <= 0:
                        raise ValueError(f"must be positive: {value!r}")
            except (TypeError, ValueError) as exc:
                raise ModelFolderError(f"{path}: bad value for {key!r} ({exc})") from exc
        return cls(**values, overridden=frozenset(values))

    def to_json_dict(self) -> dict[str, Any]:
        """The vexpress_config.json form (the keys the parity tiny model uses)."""
        keys = (
            "kps_guider_conditioning_channels", "kps_guider_block_out_channels", "audio_proj_inp_dim",
            "audio_proj_depth", "audio_proj_dim_head", "audio_proj_heads", "audio_proj_ff_mult",
            "num_pad_audio_frames", "reference_net_encoder_hidden_dim",
        )
        out: dict[str, Any] = {}
        for key in keys:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out
