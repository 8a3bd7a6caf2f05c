"""The audio a generation starts from, typed: a waveform, wav2vec2 features, per-frame windows or ready tokens.

``VExpressPipeline.encode_audio`` (and so ``generate``) takes any of them and runs only the audio stages still
needed (the command line passes a waveform; the ComfyUI sampler passes the features AudioEmbed computed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError


@dataclass(frozen=True)
class _AudioArray:
    array: np.ndarray | torch.Tensor


class Waveform16k(_AudioArray):
    """Mono 16 kHz samples ``[N]`` (``inputs.audio.to_mono_16k``): wav2vec2 runs in the pipeline's audio stage."""


class Wav2Vec2Features(_AudioArray):
    """wav2vec2 features ``[N, D]`` of the whole clip (``VExpressPipeline.audio_features``), on any device."""


class AudioWindows(_AudioArray):
    """Per-frame wav2vec2 windows ``[T, 10, D]`` (``conditioning.audio_features.audio_windows``)."""


class AudioTokens(_AudioArray):
    """Projected audio tokens ``[T, n, D]`` (``VExpressPipeline.project_audio``)."""


AudioInput = Waveform16k | Wav2Vec2Features | AudioWindows | AudioTokens


def as_audio_input(audio: AudioInput | np.ndarray | torch.Tensor) -> AudioInput:
    """A typed input as it is; a bare array by its rank: ``[N]`` a waveform, ``[T, 10, D]`` windows."""
    if isinstance(audio, _AudioArray):
        return audio
    rank = np.ndim(audio)
    if rank == 1:
        return Waveform16k(audio)
    if rank == 3:
        return AudioWindows(audio)
    raise InputError(
        f"audio must be a 16 kHz waveform [N] or per-frame windows [T, 10, D] (or a typed audio input), got rank {rank}"
    )
