"""Loading a V-Express model folder: every network built on the meta device and filled strictly from its files.

Entry points: :func:`load_vexpress_models` (everything) and one loader per component
(:func:`load_reference_net`, :func:`load_denoising_unet`, :func:`load_kps_guider`, :func:`load_audio_projection`,
:func:`load_vae`, :func:`load_audio_encoder`) for callers that place components separately (ComfyUI).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointMismatchError, InputError, ModelFolderError
from .checkpoint import CheckpointFile, Source, load_strict, open_checkpoint
from .config import SHIPPED_VAE_CONFIG, UNetConfig, VExpressConstants, read_json_object
from .paths import (
    VAE_WEIGHT_NAMES,
    WAV2VEC2_WEIGHT_NAMES,
    ModelPaths,
    find_weight_file,
    resolve_model_paths,
)
from .small_nets import AudioProjection, VKpsGuider
from .unet import DenoisingUNet, ReferenceNet

logger = logging.getLogger("vexpress.models")

_DTYPES = {
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float16/bfloat16/float32`` or one of ``"fp16" "bf16" "fp32"`` (and their long names)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise InputError(f"unsupported dtype {dtype}; use float16, bfloat16 or float32")
        return dtype
    try:
        return _DTYPES[str(dtype).lower().replace("torch.", "")]
    except KeyError:
        raise InputError(f"unsupported dtype {dtype!r}; use fp16, bf16 or fp32") from None


@dataclass
class VExpressModels:
    """The loaded networks of one V-Express model (all in ``dtype``, eval mode, no gradients)."""

    vae: Any  # diffusers AutoencoderKL
    audio_encoder: Any  # transformers Wav2Vec2Model
    audio_feature_extractor: Any  # transformers Wav2Vec2FeatureExtractor
    reference_net: ReferenceNet
    denoising_unet: DenoisingUNet
    kps_guider: VKpsGuider
    audio_projection: AudioProjection
    constants: VExpressConstants
    dtype: torch.dtype
    unet_config: UNetConfig | None = None
    paths: ModelPaths | None = None


def _as_paths(paths: ModelPaths | str | Path) -> ModelPaths:
    return paths if isinstance(paths, ModelPaths) else resolve_model_paths(paths)


def _label(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def load_unet_config(paths: ModelPaths | str | Path) -> UNetConfig:
    return UNetConfig.from_json(_as_paths(paths).unet_config)


def load_constants(paths: ModelPaths | str | Path) -> VExpressConstants:
    return VExpressConstants.from_json(_as_paths(paths).vexpress_config)


def _unet_hint(paths: ModelPaths) -> str:
    source = "the SD-1.5 config shipped with the package" if paths.uses_shipped_unet_config else str(paths.unet_config)
    return (
        f"The network sizes come from {source}. If the file is the released one, it is incomplete or damaged: "
        "download it again; if the model is another size, its UNet config.json must describe it."
    )


def _constants_hint(constants: VExpressConstants, names: tuple[str, ...]) -> str:
    described = ", ".join(f"{n} = {getattr(constants, n)} ({constants.describe(n)})" for n in names)
    return (
        f"Sizes used: {described}. If the file is the released one, download it again; a model of another size "
        "needs v-express/vexpress_config.json with its values."
    )


def build_reference_net(config: UNetConfig, constants: VExpressConstants | None = None,
                        device: torch.device | str = "meta") -> ReferenceNet:
    with torch.device(device):
        return ReferenceNet(config, constants)


def build_denoising_unet(config: UNetConfig, constants: VExpressConstants | None = None,
                         device: torch.device | str = "meta") -> DenoisingUNet:
    with torch.device(device):
        return DenoisingUNet(config, constants)


def build_kps_guider(constants: VExpressConstants, device: torch.device | str = "meta") -> VKpsGuider:
    with torch.device(device):
        return VKpsGuider.from_constants(constants)


def build_audio_projection(constants: VExpressConstants, config: UNetConfig,
                           device: torch.device | str = "meta") -> AudioProjection:
    with torch.device(device):
        return AudioProjection.from_constants(constants, config.cross_attention_dim)


def motion_module_keys(unet: nn.Module) -> list[str]:
    """The denoising-UNet keys that ``motion_module.bin`` holds (and overrides)."""
    return [k for k in unet.state_dict() if ".motion_modules." in k]


def load_denoising_state(
    unet: DenoisingUNet,
    main: CheckpointFile | dict[str, torch.Tensor],
    motion: CheckpointFile | dict[str, torch.Tensor],
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    hint: str = "",
    main_label: str = "denoising_unet.bin",
    motion_label: str = "motion_module.bin",
) -> DenoisingUNet:
    """Strictly load ``denoising_unet.bin`` (every key) then ``motion_module.bin`` (the motion keys, which win)."""
    motion_keys = motion_module_keys(unet)
    sources = [
        Source(main, getattr(main, "label", main_label), None, getattr(main, "path", None)),
        Source(motion, getattr(motion, "label", motion_label), motion_keys, getattr(motion, "path", None)),
    ]
    load_strict(unet, sources, dtype=dtype, device=device, what="V-Express denoising UNet", hint=hint)
    return unet


def _settings(paths: ModelPaths | str | Path, roles: tuple[str, ...], config: UNetConfig | None,
              constants: VExpressConstants | None) -> tuple[ModelPaths, UNetConfig, VExpressConstants]:
    """The model paths (checked to hold ``roles``), the UNet config and the size constants (given or read)."""
    paths = _as_paths(paths)
    paths.require(*roles)
    return paths, config or load_unet_config(paths), constants or load_constants(paths)


def load_denoising_unet(paths: ModelPaths | str | Path, dtype: torch.dtype | str = torch.float16,
                        device: torch.device | str = "cpu", *, config: UNetConfig | None = None,
                        constants: VExpressConstants | None = None) -> DenoisingUNet:
    paths, config, constants = _settings(paths, ("denoising_unet", "motion_module"), config, constants)
    unet = build_denoising_unet(config, constants)
    main = open_checkpoint(paths.denoising_unet, _label(paths.denoising_unet))
    motion = open_checkpoint(paths.motion_module, _label(paths.motion_module))
    return load_denoising_state(unet, main, motion, dtype=resolve_dtype(dtype), device=device,
                                hint=_unet_hint(paths))


def _load_single_file(module: nn.Module, path: Path, dtype: torch.dtype | str, device: torch.device | str,
                      what: str, hint: str) -> Any:
    """Strictly load the one checkpoint file of ``module`` (built on the meta device) in ``dtype`` on ``device``."""
    state = open_checkpoint(path, _label(path))
    load_strict(module, [Source(state, state.label, None, state.path)], dtype=resolve_dtype(dtype), device=device,
                what=what, hint=hint)
    return module


def load_reference_net(paths: ModelPaths | str | Path, dtype: torch.dtype | str = torch.float16,
                       device: torch.device | str = "cpu", *, config: UNetConfig | None = None,
                       constants: VExpressConstants | None = None) -> ReferenceNet:
    paths, config, constants = _settings(paths, ("reference_net",), config, constants)
    net = build_reference_net(config, constants)
    return _load_single_file(net, paths.reference_net, dtype, device, "V-Express ReferenceNet", _unet_hint(paths))


def load_kps_guider(paths: ModelPaths | str | Path, dtype: torch.dtype | str = torch.float16,
                    device: torch.device | str = "cpu", *, constants: VExpressConstants | None = None,
                    config: UNetConfig | None = None) -> VKpsGuider:
    paths, config, constants = _settings(paths, ("v_kps_guider",), config, constants)
    if constants.kps_guider_conditioning_channels != config.block_out_channels[0]:
        raise CheckpointMismatchError(
            f"kps_guider_conditioning_channels = {constants.kps_guider_conditioning_channels} "
            f"({constants.describe('kps_guider_conditioning_channels')}) must equal the UNet's first block width "
            f"{config.block_out_channels[0]} ({paths.unet_config}); fix v-express/vexpress_config.json"
        )
    hint = _constants_hint(constants, ("kps_guider_conditioning_channels", "kps_guider_block_out_channels"))
    return _load_single_file(build_kps_guider(constants), paths.v_kps_guider, dtype, device, "V-Kps guider", hint)


def load_audio_projection(paths: ModelPaths | str | Path, dtype: torch.dtype | str = torch.float16,
                          device: torch.device | str = "cpu", *, constants: VExpressConstants | None = None,
                          config: UNetConfig | None = None) -> AudioProjection:
    paths, config, constants = _settings(paths, ("audio_projection",), config, constants)
    names = ("audio_proj_inp_dim", "audio_proj_depth", "audio_proj_heads", "audio_proj_dim_head",
             "audio_proj_ff_mult", "num_pad_audio_frames")
    return _load_single_file(build_audio_projection(constants, config), paths.audio_projection, dtype, device,
                             "V-Express audio projection", _constants_hint(constants, names))


# -- VAE ---------------------------------------------------------------------------------------------------------

_OLD_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def vae_key_renames(keys: list[str]) -> dict[str, str]:
    """New diffusers key -> key in the file, for VAE files with the pre-0.14 attention names.

    ``sd-vae-ft-mse`` (and the shared tiny model) name the mid-block attention ``query/key/value/proj_attn``;
    diffusers' ``AutoencoderKL`` calls them ``to_q/to_k/to_v/to_out.0`` (same shapes).
    """
    renames: dict[str, str] = {}
    for key in keys:
        new = key
        parts = key.split(".")
        if ".attentions." in key and len(parts) >= 2 and parts[-2] in _OLD_VAE_ATTENTION:
            new = ".".join(parts[:-2] + [_OLD_VAE_ATTENTION[parts[-2]], parts[-1]])
        renames[new] = key
    return renames


def _vae_files(path: Path) -> tuple[Path, Path]:
    """(config.json, weight file) of a VAE folder or single file."""
    if path.is_file():
        config = path.parent / "config.json"
        return (config if config.is_file() and path.parent.name == "sd-vae-ft-mse" else SHIPPED_VAE_CONFIG), path
    weights = find_weight_file(path, VAE_WEIGHT_NAMES)
    if weights is None:
        raise ModelFolderError(f"{path}: no VAE weights ({' or '.join(VAE_WEIGHT_NAMES[:2])}); download them again")
    config = path / "config.json"
    if not config.is_file():
        logger.warning("%s has no config.json; using the sd-vae-ft-mse config shipped with the package", path)
        config = SHIPPED_VAE_CONFIG
    return config, weights


def build_vae(config_path: Path, device: torch.device | str = "meta") -> nn.Module:
    from diffusers import AutoencoderKL

    config = read_json_object(config_path, "download it again")
    with torch.device(device):
        return AutoencoderKL.from_config(config)


def vae_state(state: CheckpointFile) -> CheckpointFile:
    """A VAE weight file (opened) under diffusers' current key names."""
    keys = list(state)
    if any(k.startswith(("encoder.down.", "first_stage_model.")) for k in keys):
        # e.g. vae-ft-mse-840000-ema-pruned.safetensors: same weights, original (LDM) key layout.
        raise ModelFolderError(
            f"{state.path} is a VAE in the original Stable Diffusion (LDM) format; V-Express loads the diffusers "
            "format: download the folder stabilityai/sd-vae-ft-mse (config.json + diffusion_pytorch_model.safetensors)"
        )
    return state.renamed(vae_key_renames(keys))


def open_vae_state(weights: Path) -> CheckpointFile:
    return vae_state(open_checkpoint(weights, _label(weights)))


def load_vae(paths: ModelPaths | str | Path, dtype: torch.dtype | str = torch.float16,
             device: torch.device | str = "cpu") -> nn.Module:
    """``AutoencoderKL`` from the VAE folder (or single diffusers-format file), strictly."""
    paths = _as_paths(paths)
    paths.require("vae")
    config, weights = _vae_files(paths.vae)
    vae = build_vae(config)
    state = open_vae_state(weights)
    load_strict(vae, [Source(state, state.label, None, state.path)], dtype=resolve_dtype(dtype), device=device,
                what=f"VAE described by {config}")
    return vae


# -- wav2vec2 ----------------------------------------------------------------------------------------------------


def build_audio_encoder(folder: Path, device: torch.device | str = "meta") -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    try:
        config = Wav2Vec2Config.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"{folder}/config.json: not a readable wav2vec2 config ({exc})") from exc
    with torch.device(device):
        return Wav2Vec2Model(config)


def wav2vec2_key_renames(file_keys: list[str], model_keys: set[str]) -> dict[str, str]:
    """Model key -> file key for a ``Wav2Vec2ForCTC`` (or bare ``Wav2Vec2Model``) file.

    Drops only the CTC head (``lm_head.*``), strips the ``wav2vec2.`` prefix and maps the positional conv's
    weight norm between the old ``weight_g/weight_v`` names and torch's parametrization names, whichever side
    uses which. Every other key is kept, so an unknown one shows up as unexpected.
    """
    g_new, v_new = "parametrizations.weight.original0", "parametrizations.weight.original1"
    renames: dict[str, str] = {}
    for key in file_keys:
        if key.startswith("lm_head."):
            continue
        new = key[len("wav2vec2."):] if key.startswith("wav2vec2.") else key
        if new == "masked_spec_embed" and new not in model_keys:
            continue  # the model was configured without SpecAugment masking: the vector has no use
        if new.endswith(".weight_g") and new[: -len("weight_g")] + g_new in model_keys:
            new = new[: -len("weight_g")] + g_new
        elif new.endswith(".weight_v") and new[: -len("weight_v")] + v_new in model_keys:
            new = new[: -len("weight_v")] + v_new
        elif new.endswith(g_new) and new[: -len(g_new)] + "weight_g" in model_keys:
            new = new[: -len(g_new)] + "weight_g"
        elif new.endswith(v_new) and new[: -len(v_new)] + "weight_v" in model_keys:
            new = new[: -len(v_new)] + "weight_v"
        renames[new] = key
    return renames


def audio_encoder_source(encoder: nn.Module, state: CheckpointFile) -> Source:
    """The strict-load source of a wav2vec2 weight file (opened) for ``encoder`` (a ``Wav2Vec2Model``)."""
    model_keys = set(encoder.state_dict())
    state = state.renamed(wav2vec2_key_renames(list(state), model_keys))
    extra = {}
    if "masked_spec_embed" in model_keys and "masked_spec_embed" not in state:
        # Only used for SpecAugment masking in training; some exports omit it. Zeros, never random.
        hidden = encoder.config.hidden_size
        extra["masked_spec_embed"] = lambda: torch.zeros(hidden)
    return Source(state, state.label, None, state.path, extra)


def load_audio_encoder(paths: ModelPaths | str | Path, dtype: torch.dtype | str = torch.float16,
                       device: torch.device | str = "cpu") -> tuple[nn.Module, Any]:
    """``(Wav2Vec2Model, Wav2Vec2FeatureExtractor)`` from the wav2vec2-base-960h folder, strictly."""
    from transformers import Wav2Vec2FeatureExtractor

    paths = _as_paths(paths)
    paths.require("wav2vec2")
    folder = paths.wav2vec2
    weights = find_weight_file(folder, WAV2VEC2_WEIGHT_NAMES)
    if weights is None:
        raise ModelFolderError(f"{folder}: no wav2vec2 weights ({' or '.join(WAV2VEC2_WEIGHT_NAMES)})")
    encoder = build_audio_encoder(folder)
    state = open_checkpoint(weights, _label(weights))
    load_strict(encoder, [audio_encoder_source(encoder, state)], dtype=resolve_dtype(dtype), device=device,
                what=f"wav2vec2 model described by {folder / 'config.json'}")
    if (folder / "preprocessor_config.json").is_file():
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    else:
        logger.warning("%s has no preprocessor_config.json; using wav2vec2-base-960h's feature extractor settings",
                       folder)
        extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                             do_normalize=True, return_attention_mask=False)
    return encoder, extractor


# -- everything --------------------------------------------------------------------------------------------------


def load_vexpress_models(paths: ModelPaths | str | Path, dtype: torch.dtype | str = torch.float16,
                         device: torch.device | str = "cpu") -> VExpressModels:
    """Load all networks of a V-Express model folder strictly, directly in ``dtype`` on ``device``."""
    paths = _as_paths(paths)
    paths.require()
    dtype = resolve_dtype(dtype)
    config = load_unet_config(paths)
    constants = load_constants(paths)
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - start
        return result

    reference_net = timed("reference_net", load_reference_net, paths, dtype, device, config=config,
                          constants=constants)
    denoising_unet = timed("denoising_unet", load_denoising_unet, paths, dtype, device, config=config,
                           constants=constants)
    kps_guider = timed("kps_guider", load_kps_guider, paths, dtype, device, constants=constants, config=config)
    audio_projection = timed("audio_projection", load_audio_projection, paths, dtype, device,
                             constants=constants, config=config)
    vae = timed("vae", load_vae, paths, dtype, device)
    audio_encoder, extractor = timed("audio_encoder", load_audio_encoder, paths, dtype, device)
    hidden = int(audio_encoder.config.hidden_size)
    if hidden != constants.audio_proj_inp_dim:
        raise CheckpointMismatchError(
            f"the audio encoder in {paths.wav2vec2} outputs {hidden}-wide features but the audio projection "
            f"expects {constants.audio_proj_inp_dim} (audio_proj_inp_dim, {constants.describe('audio_proj_inp_dim')});"
            " use wav2vec2-base-960h, or fix v-express/vexpress_config.json"
        )
    logger.info("loaded V-Express models (%s, %s) in %.1f s: %s", dtype, device, sum(timings.values()),
                ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return VExpressModels(
        vae=vae,
        audio_encoder=audio_encoder,
        audio_feature_extractor=extractor,
        reference_net=reference_net,
        denoising_unet=denoising_unet,
        kps_guider=kps_guider,
        audio_projection=audio_projection,
        constants=constants,
        dtype=dtype,
        unet_config=config,
        paths=paths,
    )
