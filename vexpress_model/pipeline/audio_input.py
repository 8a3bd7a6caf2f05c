"""The audio a generation starts from, typed: a waveform, wav2vec2 features, per-frame windows or ready tokens.

``VExpressPipeline.generate`` takes any of them and runs only the audio stages still needed (the command line
passes a waveform; the ComfyUI sampler passes the features AudioEmbed computed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..errors import InputError
from .hooks import Hooks


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


class AudioStages(Protocol):
    """The audio stages of ``VExpressPipeline`` that an input may still need."""

    def encode_audio(self, waveform_16k: np.ndarray | torch.Tensor, num_frames: int, *,
                     hooks: Hooks | None = None) -> torch.Tensor: ...

    def audio_tokens(self, features: np.ndarray | torch.Tensor, num_frames: int,
                     hooks: Hooks | None = None) -> torch.Tensor: ...

    def project_audio(self, audio_windows: np.ndarray | torch.Tensor, hooks: Hooks | None = None) -> torch.Tensor: ...


def audio_tokens_for(
    pipeline: AudioStages, audio: AudioInput | np.ndarray | torch.Tensor, num_frames: int, hooks: Hooks
) -> torch.Tensor:
    """Audio tokens ``[T, n, D]`` for ``num_frames`` frames, running the audio stages ``audio`` still needs."""
    audio = as_audio_input(audio)
    if isinstance(audio, AudioTokens):
        return torch.as_tensor(audio.array)
    if isinstance(audio, AudioWindows):
        return pipeline.project_audio(audio.array, hooks)
    if isinstance(audio, Wav2Vec2Features):
        return pipeline.audio_tokens(audio.array, num_frames, hooks)
    return pipeline.encode_audio(audio.array, num_frames, hooks=hooks)
