"""Random-weight V-Express model folders in the released layout, for tests and benchmarks.

``write_random_model_folder(dest, size="tiny")`` writes a complete ``model_ckpts/`` folder that loads strictly and
runs in seconds (the parity tiny widths, parity README §1); ``size="full"`` writes the real sizes (about 6 GB,
for load benchmarks only: never in unit tests, never committed) from the public configs in
``shared/vexpress/real_configs/model_ckpts`` (or ``configs_dir``).

Like the released files: the five ``v-express/*.bin`` are fp16 ``torch.save`` state dicts (``motion_module.bin``
holds *other* values for the motion keys than ``denoising_unet.bin``, so a loader that skips it is caught); the
VAE uses the old attention names ``query/key/value/proj_attn``; wav2vec2 is a ``Wav2Vec2ForCTC`` file with
``lm_head`` and the positional conv's weight norm as ``weight_g/weight_v``; all in fp32.

Values are deterministic in ``seed``: each tensor is drawn from its own generator seeded by (seed, file, key).
Linear/conv weights ~ N(0, 1/fan_in), biases ~ N(0, 0.05^2), norm weights ~ 1 + N(0, 0.1^2), motion-module
position encodings keep their sinusoidal values.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from ..models.config import SHIPPED_UNET_CONFIG, SHIPPED_VAE_CONFIG, UNetConfig, VExpressConstants
from ..models.layers import sinusoidal_position_encoding

logger = logging.getLogger("vexpress.models")

TINY_CONSTANTS = VExpressConstants(
    kps_guider_conditioning_channels=32,
    kps_guider_block_out_channels=(8, 16, 24, 32),
    audio_proj_inp_dim=48,
    audio_proj_depth=4,
    audio_proj_dim_head=8,
    audio_proj_heads=3,
    audio_proj_ff_mult=4,
    num_pad_audio_frames=2,
    reference_net_encoder_hidden_dim=768,
)
TINY_UNET_OVERRIDES = {"block_out_channels": [32, 64, 96, 96], "attention_head_dim": 4, "cross_attention_dim": 40,
                       "sample_size": 8}
TINY_VAE_OVERRIDES = {"block_out_channels": [16, 32, 32, 32], "norm_num_groups": 8, "sample_size": 64}
TINY_WAV2VEC2 = {"conv_dim": [16, 16, 16, 16, 16, 16, 24], "hidden_size": 48, "intermediate_size": 96,
                 "num_attention_heads": 4, "num_hidden_layers": 12, "num_conv_pos_embeddings": 128,
                 "num_conv_pos_embedding_groups": 16}
# facebook/wav2vec2-base-960h's architecture settings (public config), widths overridden for "tiny".
_WAV2VEC2_BASE = {
    "architectures": ["Wav2Vec2ForCTC"], "model_type": "wav2vec2", "activation_dropout": 0.1,
    "apply_spec_augment": True, "attention_dropout": 0.1, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    "conv_bias": False, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "ctc_loss_reduction": "sum", "do_stable_layer_norm": False, "feat_extract_activation": "gelu",
    "feat_extract_norm": "group", "feat_proj_dropout": 0.1, "final_dropout": 0.1, "hidden_act": "gelu",
    "hidden_dropout": 0.1, "layer_norm_eps": 1e-05, "layerdrop": 0.1, "mask_time_prob": 0.05,
    "mask_time_length": 10, "mask_feature_prob": 0.0, "mask_feature_length": 10, "num_feat_extract_layers": 7,
    "vocab_size": 32, "codevector_dim": 256, "contrastive_logits_temperature": 0.1, "ctc_zero_infinity": False,
    "diversity_loss_weight": 0.1, "feat_extract_dropout": 0.0, "feat_quantizer_dropout": 0.0,
    "gradient_checkpointing": False, "hidden_dropout_prob": 0.1, "initializer_range": 0.02,
    "num_codevector_groups": 2, "num_codevectors_per_group": 320, "num_negatives": 100,
    "proj_codevector_dim": 256,
}
_FEATURE_EXTRACTOR = {"do_normalize": True, "feature_size": 1, "padding_side": "right", "padding_value": 0.0,
                      "return_attention_mask": False, "sampling_rate": 16000}
_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L", "U", "M",
          "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z"]
_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
_TOKENIZER_CONFIG = {**_SPECIAL_TOKENS, "do_lower_case": False, "return_attention_mask": False,
                     "do_normalize": True}


def default_configs_dir() -> Path | None:
    """``$VEXPRESS_SHARED/vexpress/real_configs/model_ckpts`` or ``../shared/...`` beside the checkout."""
    shared = os.environ.get("VEXPRESS_SHARED")
    candidates = [Path(shared)] if shared else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared")
    for base in candidates:
        path = base / "vexpress" / "real_configs" / "model_ckpts"
        if path.is_dir():
            return path
    return None


def _stream_seed(seed: int, file: str, key: str) -> int:
    return (int(seed) * 0x9E3779B1 + zlib.crc32(f"{file}\0{key}".encode())) % (2**63 - 1)


def random_tensor(key: str, shape: tuple[int, ...], file: str, seed: int) -> torch.Tensor:
    """The fp32 value of one tensor of a random model (see the module docstring for the distributions)."""
    generator = torch.Generator().manual_seed(_stream_seed(seed, file, key))
    if key.endswith("pos_encoder.pe"):
        return sinusoidal_position_encoding(shape[1], shape[2])
    if key.endswith("masked_spec_embed"):
        return torch.rand(shape, generator=generator)
    if key == "latents":
        return torch.randn(shape, generator=generator) / shape[-1] ** 0.5
    if len(shape) >= 2:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        return torch.randn(shape, generator=generator) / fan_in**0.5
    if key.endswith("bias"):
        return torch.randn(shape, generator=generator) * 0.05
    return 1.0 + torch.randn(shape, generator=generator) * 0.1


def random_state_dict(shapes: Mapping[str, tuple[int, ...]], file: str, seed: int,
                      dtype: torch.dtype) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((k, random_tensor(k, tuple(s), file, seed).to(dtype)) for k, s in shapes.items())


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _save(state: Mapping[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _shapes(module: torch.nn.Module, keys: Iterable[str] | None = None) -> dict[str, tuple[int, ...]]:
    state = module.state_dict()
    return {k: tuple(state[k].shape) for k in (keys if keys is not None else state)}


def old_vae_names(keys: Iterable[str]) -> dict[str, str]:
    """diffusers VAE key -> the old name used by sd-vae-ft-mse's file."""
    back = {"to_q": "query", "to_k": "key", "to_v": "value"}
    out = {}
    for key in keys:
        new = key
        if ".attentions." in key:
            parts = key.split(".")
            if parts[-2] in back:
                new = ".".join(parts[:-2] + [back[parts[-2]], parts[-1]])
            elif key.endswith((".to_out.0.weight", ".to_out.0.bias")):
                new = key.replace(".to_out.0.", ".proj_attn.")
        out[key] = new
    return out


def write_random_model_folder(
    dest: str | Path,
    size: str = "tiny",
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
    configs_dir: str | Path | None = None,
) -> Path:
    """Write a complete random-weight model folder in the released layout at ``dest`` and return ``dest``."""
    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    from ..models.loading import (
        build_audio_projection,
        build_denoising_unet,
        build_kps_guider,
        build_reference_net,
        motion_module_keys,
    )

    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if size == "full":
        source = Path(configs_dir) if configs_dir is not None else default_configs_dir()
        if source is None or not source.is_dir():
            raise FileNotFoundError(
                "real configs not found: pass configs_dir (shared/vexpress/real_configs/model_ckpts)"
            )
        unet_raw = json.loads((source / "stable-diffusion-v1-5" / "unet" / "config.json").read_text())
        vae_raw = json.loads((source / "sd-vae-ft-mse" / "config.json").read_text())
        constants = VExpressConstants()
    else:
        unet_raw = {**json.loads(SHIPPED_UNET_CONFIG.read_text()), **TINY_UNET_OVERRIDES}
        vae_raw = {**json.loads(SHIPPED_VAE_CONFIG.read_text()), **TINY_VAE_OVERRIDES}
        constants = TINY_CONSTANTS
    _write_json(dest / "stable-diffusion-v1-5" / "unet" / "config.json", unet_raw)
    config = UNetConfig.from_dict(unet_raw)

    vx = dest / "v-express"
    nets = {
        "reference_net.bin": build_reference_net(config, constants),
        "v_kps_guider.bin": build_kps_guider(constants),
        "audio_projection.bin": build_audio_projection(constants, config),
    }
    unet = build_denoising_unet(config, constants)
    for name, net in nets.items():
        _save(random_state_dict(_shapes(net), name, seed, dtype), vx / name)
        logger.info("wrote %s", vx / name)
    del nets
    _save(random_state_dict(_shapes(unet, motion_module_keys(unet)), "motion_module.bin", seed, dtype),
          vx / "motion_module.bin")
    _save(random_state_dict(_shapes(unet), "denoising_unet.bin", seed, dtype), vx / "denoising_unet.bin")
    del unet
    if size == "tiny":
        _write_json(vx / "vexpress_config.json", constants.to_json_dict())

    vae_dir = dest / "sd-vae-ft-mse"
    _write_json(vae_dir / "config.json", vae_raw)
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(vae_raw)
    renames = old_vae_names(vae.state_dict())
    vae_state = random_state_dict(_shapes(vae), "sd-vae-ft-mse", seed, torch.float32)
    _save(OrderedDict((renames[k], v) for k, v in vae_state.items()), vae_dir / "diffusion_pytorch_model.bin")
    del vae, vae_state

    w2v_dir = dest / "wav2vec2-base-960h"
    w2v_dir.mkdir(parents=True, exist_ok=True)
    if size == "full":
        for name in ("config.json", "preprocessor_config.json", "feature_extractor_config.json",
                     "special_tokens_map.json", "tokenizer_config.json", "vocab.json"):
            if (source / "wav2vec2-base-960h" / name).is_file():
                shutil.copyfile(source / "wav2vec2-base-960h" / name, w2v_dir / name)
        w2v_raw = json.loads((w2v_dir / "config.json").read_text())
    else:
        w2v_raw = {"_name_or_path": "tiny-wav2vec2-base-960h", **_WAV2VEC2_BASE, **TINY_WAV2VEC2}
        _write_json(w2v_dir / "config.json", w2v_raw)
        _write_json(w2v_dir / "preprocessor_config.json", _FEATURE_EXTRACTOR)
        _write_json(w2v_dir / "feature_extractor_config.json", _FEATURE_EXTRACTOR)
        _write_json(w2v_dir / "special_tokens_map.json", _SPECIAL_TOKENS)
        _write_json(w2v_dir / "tokenizer_config.json", _TOKENIZER_CONFIG)
        _write_json(w2v_dir / "vocab.json", {token: i for i, token in enumerate(_VOCAB)})
    w2v_config = Wav2Vec2Config(**{k: v for k, v in w2v_raw.items() if not k.startswith("_")})
    with torch.device("meta"):
        ctc = Wav2Vec2ForCTC(w2v_config)
    shapes = {}
    for key, shape in _shapes(ctc).items():
        # The released file predates torch's weight-norm parametrization names.
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        shapes[key] = shape
    del ctc
    w2v_state = random_state_dict(shapes, "wav2vec2-base-960h", seed, torch.float32)
    for key in list(w2v_state):
        if key.endswith("weight_g"):
            # weight_norm(dim=2): g is the norm of v over every axis but 2, so the weight equals v at start.
            v = w2v_state[key[: -len("weight_g")] + "weight_v"]
            w2v_state[key] = v.norm(dim=(0, 1), keepdim=True)
    _save(w2v_state, w2v_dir / "pytorch_model.bin")
    logger.info("wrote a %s random V-Express model folder to %s", size, dest)
    return dest
