"""Audio conditioning: wav2vec2 features of the whole clip, and the per-frame windows of them (docs/spec.md §3.7, §4.9).

**Features.** The waveform is normalised by the wav2vec2 feature extractor over the *whole clip* (zero
mean, unit variance, eps 1e-7), then the encoder's ``last_hidden_state`` is taken -- ~50 vectors per second.

Long clips are computed piecewise, with the same result as one forward pass (up to float rounding):

* The convolutional front end (by far the largest activations: 512 channels at 3.2 kHz for the real model)
  runs on chunks of ``chunk_seconds`` of output frames; each chunk reads its input samples plus the
  receptive-field margin (400 samples), so every output frame sees exactly the samples it sees in one pass.
  Overlapping context alone would not be exact: the first conv layer of ``wav2vec2-base`` is followed by a
  GroupNorm that normalises every channel over the **whole clip**. Its statistics are therefore gathered in
  a first pass over the chunks (float64, merged per chunk) and applied in the second.
* The transformer layers attend over the whole clip (global self-attention, so no chunking with finite
  context can be exact). They run once on the full frame sequence, which is small (e.g. 15 000 x 768 for
  5 minutes); with PyTorch's SDPA attention (the transformers default) the attention matrix is never
  materialised.

**Windows.** The features (in float32) are linearly interpolated (``align_corners=False``) to two vectors
per video frame, padded with ``2 * num_pad`` zero vectors at each end, and frame *i* takes padded rows
``2i .. 2i + 2 * (2 * num_pad + 1) - 1``: ``[T, 10, D]`` for the default ``num_pad=2``.

**Typed inputs.** The audio a generation starts from: a waveform, wav2vec2 features, per-frame windows or ready
tokens. ``VExpressPipeline.encode_audio`` (and so ``generate``) takes any of them and runs only the audio stages
still needed (the command line passes a waveform; the ComfyUI sampler passes the features AudioEmbed computed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InputError

logger = logging.getLogger("vexpress.conditioning")

SAMPLE_RATE = 16000
DEFAULT_CHUNK_SECONDS = 20.0


def normalize_waveform(feature_extractor: Any, waveform_16k: np.ndarray) -> np.ndarray:
    """The wav2vec2 input: the feature extractor's normalisation over the whole clip, float32 [N]."""
    waveform = np.asarray(waveform_16k, dtype=np.float32)
    if waveform.ndim != 1 or waveform.shape[0] == 0:
        raise InputError(f"the audio waveform must be non-empty mono [N], got shape {waveform.shape}")
    values = feature_extractor(waveform, sampling_rate=SAMPLE_RATE, return_tensors="np").input_values
    return np.ascontiguousarray(values[0], dtype=np.float32)


def _conv_geometry(conv_layers: Any) -> tuple[int, int]:
    """(total stride, receptive field) of the convolutional front end, in samples."""
    stride, field = 1, 1
    for layer in conv_layers:
        kernel, step = layer.conv.kernel_size[0], layer.conv.stride[0]
        field += (kernel - 1) * stride
        stride *= step
    return stride, field


def _num_frames(num_samples: int, conv_layers: Any) -> int:
    length = num_samples
    for layer in conv_layers:
        kernel, step = layer.conv.kernel_size[0], layer.conv.stride[0]
        length = (length - kernel) // step + 1 if length >= kernel else 0
    return max(length, 0)


def _first_layer_group_norm(conv_layers: Any) -> torch.nn.GroupNorm | None:
    norm = getattr(conv_layers[0], "layer_norm", None)
    return norm if isinstance(norm, torch.nn.GroupNorm) else None


def _group_norm_statistics(
    first: Any, samples: torch.Tensor, chunk_outputs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) variance of the first conv layer's output over the whole clip (float64)."""
    kernel, step = first.conv.kernel_size[0], first.conv.stride[0]
    total = (samples.shape[-1] - kernel) // step + 1
    count, mean, m2 = 0, None, None
    for start in range(0, total, chunk_outputs):
        stop = min(start + chunk_outputs, total)
        piece = samples[..., start * step : (stop - 1) * step + kernel]
        output = first.conv(piece[None, None]).double()[0]  # [C, n]
        n = output.shape[-1]
        chunk_mean = output.mean(dim=-1)
        chunk_m2 = ((output - chunk_mean[:, None]) ** 2).sum(dim=-1)
        if mean is None:
            count, mean, m2 = n, chunk_mean, chunk_m2
            continue
        delta = chunk_mean - mean
        merged = count + n
        mean = mean + delta * (n / merged)
        m2 = m2 + chunk_m2 + delta**2 * (count * n / merged)
        count = merged
    return mean, m2 / count


def _conv_front_end_chunked(encoder: Any, samples: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """The conv feature encoder's output [1, C, n] computed chunk by chunk (exact, see module doc)."""
    layers = encoder.feature_extractor.conv_layers
    stride, field = _conv_geometry(layers)
    frames = _num_frames(samples.shape[-1], layers)
    norm = _first_layer_group_norm(layers)
    statistics = None
    if norm is not None:
        first_step = layers[0].conv.stride[0]
        statistics = _group_norm_statistics(layers[0], samples, chunk_frames * stride // first_step)
    pieces = []
    for start in range(0, frames, chunk_frames):
        stop = min(start + chunk_frames, frames)
        hidden = samples[start * stride : (stop - 1) * stride + field][None, None]
        for index, layer in enumerate(layers):
            if index == 0 and statistics is not None:
                hidden = _conv_with_global_group_norm(layer, hidden, norm, statistics)
            else:
                hidden = layer(hidden)
        pieces.append(hidden)
    return torch.cat(pieces, dim=-1)


def _conv_with_global_group_norm(
    layer: Any, hidden: torch.Tensor, norm: torch.nn.GroupNorm, statistics: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    mean, variance = statistics
    output = layer.conv(hidden)
    scale = torch.rsqrt(variance + norm.eps)
    if norm.affine:
        shift = norm.bias.double() - mean * scale * norm.weight.double()
        scale = scale * norm.weight.double()
    else:
        shift = -mean * scale
    output = output * scale.to(output.dtype)[None, :, None] + shift.to(output.dtype)[None, :, None]
    return layer.activation(output)


@torch.no_grad()
def wav2vec2_features(
    encoder: Any,
    feature_extractor: Any,
    waveform_16k: np.ndarray,
    chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
) -> torch.Tensor:
    """wav2vec2 ``last_hidden_state`` of the whole clip: [n, D] on the encoder's device, in its dtype.

    ``encoder`` is a transformers ``Wav2Vec2Model`` (in eval mode); clips longer than ``chunk_seconds``
    run the convolutional front end in chunks (``None``: never).
    """
    values = normalize_waveform(feature_extractor, waveform_16k)
    parameter = next(encoder.parameters())
    samples = torch.from_numpy(values).to(device=parameter.device, dtype=parameter.dtype)
    layers = encoder.feature_extractor.conv_layers
    frames = _num_frames(samples.shape[-1], layers)
    if frames == 0:
        raise InputError(
            f"the audio is too short for wav2vec2 ({samples.shape[-1]} samples at 16 kHz; at least "
            f"{_conv_geometry(layers)[1]} are needed)"
        )
    stride, _ = _conv_geometry(layers)
    chunk_frames = None if chunk_seconds is None else max(1, int(chunk_seconds * SAMPLE_RATE / stride))
    if chunk_frames is None or frames <= chunk_frames:
        return encoder(samples[None]).last_hidden_state[0]
    logger.debug("wav2vec2 front end in chunks of %d frames (%d frames in all)", chunk_frames, frames)
    extracted = _conv_front_end_chunked(encoder, samples, chunk_frames).transpose(1, 2)
    hidden, _ = encoder.feature_projection(extracted)
    return encoder.encoder(hidden).last_hidden_state[0]


def audio_windows(features: torch.Tensor | np.ndarray, num_frames: int, num_pad: int = 2) -> torch.Tensor:
    """Per-frame windows of wav2vec2 vectors: [num_frames, 2 * (2 * num_pad + 1), D] (docs/spec.md §4.9 steps 3-5).

    Interpolation runs in float32; the result has the dtype (and device) of ``features``.
    """
    tensor = torch.as_tensor(features)
    if tensor.ndim != 2 or tensor.shape[0] == 0:
        raise InputError(f"features must be [n > 0, D], got shape {tuple(tensor.shape)}")
    if num_frames <= 0 or num_pad < 0:
        raise InputError(f"num_frames must be positive and num_pad non-negative, got {num_frames}, {num_pad}")
    interpolated = torch.nn.functional.interpolate(
        tensor.float().T[None], size=2 * int(num_frames), mode="linear", align_corners=False
    )[0].T
    padding = torch.zeros(2 * num_pad, tensor.shape[1], dtype=interpolated.dtype, device=interpolated.device)
    padded = torch.cat([padding, interpolated, padding], dim=0)
    windows = padded.unfold(0, 2 * (2 * num_pad + 1), 2).permute(0, 2, 1)
    return windows.contiguous().to(tensor.dtype)


# --------------------------------------------------------------------------------------------- typed inputs


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
