"""The pack's custom socket types and the conversions between ComfyUI's core types and the library's arrays.

Core types at the edges (CONTRACT §1.3): IMAGE ``[B, H, W, C]`` float32 in 0..1, AUDIO ``{"waveform": [B, C, T],
"sample_rate": int}`` (possibly None), VIDEO a ``VideoInput``. The library speaks uint8 ``[T, H, W, 3]`` frames and
float32 ``[C, N]`` waveforms (docs/ARCHITECTURE.md "Conventions").

Pack types (never a core type name): ``VEXPRESS_PIPE`` (:class:`VExpressPipe`), ``VEXPRESS_KPS`` (the library's
``KpsTrack``), ``VEXPRESS_AUDIO_EMBEDS`` (:class:`AudioEmbeds`), ``VEXPRESS_CROP`` (the library's ``FaceCrop``:
where the face crop lies in the full image, for PasteBack).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..vexpress_model.errors import InputError
from . import _comfy

PIPE = "VEXPRESS_PIPE"
KPS = "VEXPRESS_KPS"
AUDIO_EMBEDS = "VEXPRESS_AUDIO_EMBEDS"
CROP = "VEXPRESS_CROP"

PipeType = _comfy.io.Custom(PIPE)
KpsType = _comfy.io.Custom(KPS)
AudioEmbedsType = _comfy.io.Custom(AUDIO_EMBEDS)
CropType = _comfy.io.Custom(CROP)


@dataclass
class VExpressPipe:
    """What ``LoadVExpressModels`` hands to the other nodes.

    ``models`` is the library's ``VExpressModels``; ``patchers`` maps each network's role (``"vae"``,
    ``"reference_net"``, ...) to the ``ModelPatcher`` that ComfyUI's memory manager sees; ``offload`` asks the
    placement to take every network off the GPU as soon as its stage is done. No state changes after loading:
    ComfyUI's execution cache keeps this object alive while the loader's inputs are unchanged.
    """

    models: Any
    patchers: dict[str, Any]
    offload: bool
    dtype: Any
    model_dir: str
    paths: Any = None

    def __repr__(self) -> str:  # shown in ComfyUI's debug logs
        return f"VExpressPipe({self.model_dir!r}, dtype={self.dtype}, offload={self.offload})"


@dataclass(frozen=True)
class AudioEmbeds:
    """What ``VExpressAudioEmbed`` hands to the sampler.

    ``features``: wav2vec2 features ``[N, D]`` of the whole clip (CPU), from which the sampler builds the
    per-frame windows and audio tokens for its frame plan; ``duration_s``: the clip length (16 kHz samples / 16000);
    ``fps`` and ``num_frames``: the frame rate asked for and the frame count it gives; ``audio``: the AUDIO that was
    encoded (batch item 0 of the input, at its own sample rate and channels) for muxing.
    """

    features: Any
    duration_s: float
    fps: float
    num_frames: int
    audio: dict[str, Any]

    def __repr__(self) -> str:
        return f"AudioEmbeds({self.num_frames} frames at {self.fps:g} fps, {self.duration_s:.2f} s)"


# -------------------------------------------------------------------------------------------- conversions


def image_to_uint8(image: Any) -> np.ndarray:
    """IMAGE ``[B, H, W, C]`` float 0..1 -> uint8 RGB ``[B, H, W, 3]`` (alpha dropped, rounded)."""
    import torch

    tensor = image if isinstance(image, torch.Tensor) else torch.as_tensor(np.asarray(image))
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4 or tensor.shape[-1] not in (1, 3, 4):
        raise InputError(f"IMAGE must be [B, H, W, C], got {tuple(tensor.shape)}")
    tensor = tensor[..., :3] if tensor.shape[-1] >= 3 else tensor.expand(*tensor.shape[:-1], 3)
    return (tensor.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def uint8_to_image(frames: np.ndarray) -> Any:
    """uint8 ``[T, H, W, 3]`` -> IMAGE float32 ``[T, H, W, 3]`` on ComfyUI's intermediate device (CPU)."""
    import torch

    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # e.g. a decoded file's read-only buffer: torch warns about sharing it
        array = array.copy()
    return torch.from_numpy(array).float().div_(255.0)


def require_audio(audio: Any, what: str) -> dict[str, Any]:
    """The AUDIO value, or an actionable error when it is None (a video without a sound track)."""
    from ..vexpress_model.errors import InputError

    if audio is None:
        raise InputError(
            f"the {what} input carries no audio (it came from a video without a sound track); "
            "connect an AUDIO from Load Audio or from a video that has sound"
        )
    return audio


def first_audio_item(audio: dict[str, Any]) -> dict[str, Any]:
    """The AUDIO of batch item 0 only (core video writers mux batch > 1 wrongly)."""
    waveform = audio["waveform"]
    if waveform.ndim == 3 and waveform.shape[0] > 1:
        waveform = waveform[:1]
    return {"waveform": waveform, "sample_rate": int(audio["sample_rate"])}
