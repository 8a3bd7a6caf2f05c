"""models layer of the V-Express library (see docs/ARCHITECTURE.md): the five V-Express networks, the model
folder layout, strict checkpoint loading.

The names below are imported on first use (PEP 562), so ``vexpress_model.models.paths`` or ``.config`` can be
used without importing torch and diffusers (e.g. to register model folders at ComfyUI start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "UNetConfig": "config",
    "VExpressConstants": "config",
    "VExpressModels": "loading",
    "load_audio_encoder": "loading",
    "load_audio_projection": "loading",
    "load_denoising_unet": "loading",
    "load_kps_guider": "loading",
    "load_reference_net": "loading",
    "load_vae": "loading",
    "load_vexpress_models": "loading",
    "resolve_dtype": "loading",
    "ModelPaths": "paths",
    "resolve_model_paths": "paths",
    "AudioProjection": "small_nets",
    "VKpsGuider": "small_nets",
    "DenoisingUNet": "unet",
    "ReferenceContext": "unet",
    "ReferenceNet": "unet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .config import UNetConfig, VExpressConstants
    from .loading import (
        VExpressModels,
        load_audio_encoder,
        load_audio_projection,
        load_denoising_unet,
        load_kps_guider,
        load_reference_net,
        load_vae,
        load_vexpress_models,
        resolve_dtype,
    )
    from .paths import ModelPaths, resolve_model_paths
    from .small_nets import AudioProjection, VKpsGuider
    from .unet import DenoisingUNet, ReferenceContext, ReferenceNet
