"""Speech audio: decoding with PyAV, in-memory waveforms, and the mono 16 kHz signal wav2vec2 expects.

:func:`decode_audio` reads any container and codec FFmpeg (inside PyAV) can decode -- WAV, MP3, FLAC,
M4A/AAC, OGG (Vorbis, Opus), video files with an audio track -- into float32 ``[channels, samples]`` in
[-1, 1] at the file's own rate. Integer PCM is scaled by its full range, so PCM16 becomes exactly
``int16 / 32768`` (what ``torchaudio.load`` returns and the original was run with). No ``ffmpeg`` binary
and no torchaudio are involved.

:func:`to_mono_16k` makes the mono 16 kHz signal from any rate from 8 to 192 kHz: SciPy's polyphase
``resample_poly`` by default, torchaudio's sinc algorithm with ``compat="original"`` (parity). Empty,
zero-length or undecodable audio raises :class:`~vexpress_model.errors.InputError`; silent audio is valid and
only logs a warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..validation import require_file
from .resample import resample

logger = logging.getLogger("vexpress.inputs")

TARGET_SAMPLE_RATE = 16000
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
SILENCE_PEAK = 1e-4  # -80 dBFS

_INTEGER_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0, np.dtype(np.int64): 2.0**63}


@dataclass(frozen=True)
class DecodedAudio:
    """float32 ``waveform`` [channels, samples] in [-1, 1] at ``sample_rate`` Hz."""

    waveform: np.ndarray
    sample_rate: int

    @property
    def num_channels(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[1])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


def _frame_to_float(frame: Any) -> np.ndarray:
    """One decoded PyAV audio frame as float32 [channels, samples]."""
    samples = frame.to_ndarray()
    channels = frame.layout.nb_channels if hasattr(frame.layout, "nb_channels") else len(frame.layout.channels)
    if not frame.format.is_planar:
        samples = samples.reshape(-1, channels).T
    if samples.dtype in _INTEGER_SCALE:
        return (samples.astype(np.float32) / np.float32(_INTEGER_SCALE[samples.dtype])).astype(np.float32)
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    return samples.astype(np.float32)


def _check_audio(audio: DecodedAudio, name: str) -> DecodedAudio:
    if not (MIN_SAMPLE_RATE <= audio.sample_rate <= MAX_SAMPLE_RATE):
        raise InputError(
            f"{name} has a sample rate of {audio.sample_rate} Hz; supported are {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE} Hz -- convert it (e.g. to 16 kHz WAV)"
        )
    if audio.num_samples == 0 or audio.num_channels == 0:
        raise InputError(f"{name} contains no audio samples (zero length); use a file with speech in it")
    if not np.isfinite(audio.waveform).all():
        raise InputError(f"{name} contains NaN or infinite samples; re-export the audio")
    peak = float(np.abs(audio.waveform).max())
    if peak < SILENCE_PEAK:
        logger.warning("%s is silent (peak %.1e): the video will have no lip motion", name, peak)
    return audio


def _trim_encoder_padding(waveform: np.ndarray, rate: int, declared_s: float | None) -> np.ndarray:
    """Drop the codec's end padding (AAC's last partial frame) when an MP4/MOV/M4A states the exact length."""
    if declared_s is None:
        return waveform
    expected = int(round(declared_s * rate))
    if 0 < expected < waveform.shape[1] <= expected + 4096:
        return np.ascontiguousarray(waveform[:, :expected])
    return waveform


def decode_audio(path: str | Path) -> DecodedAudio:
    """Decode the first audio track of a file to float32 [channels, samples] at its own sample rate."""
    import av

    path = require_file(path, "audio file", "check the path")
    name = f"audio file {path}"
    if path.stat().st_size == 0:
        raise InputError(f"{name} is empty (0 bytes); use a file with speech in it")
    chunks: list[np.ndarray] = []
    rate = channels = None
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                raise InputError(f"{name} has no audio track")
            stream = container.streams.audio[0]
            exact_length = container.format.name.startswith("mov") and stream.duration and stream.time_base
            declared = float(stream.duration * stream.time_base) if exact_length else None
            for frame in container.decode(stream):
                samples = _frame_to_float(frame)
                if rate is None:
                    rate, channels = int(frame.sample_rate), samples.shape[0]
                elif (int(frame.sample_rate), samples.shape[0]) != (rate, channels):
                    raise InputError(f"{name} changes its sample rate or channel count midway; re-export it")
                chunks.append(samples)
    except InputError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"{name} cannot be decoded ({reason}); it is damaged or not an audio file") from None
    if not chunks:
        raise InputError(f"{name} contains no audio samples (zero length or undecodable); use another file")
    waveform = np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32)
    waveform = _trim_encoder_padding(waveform, rate, declared)
    logger.debug("decoded %s: %d channels, %d samples at %d Hz", path, channels, waveform.shape[1], rate)
    return _check_audio(DecodedAudio(waveform, int(rate)), name)


def audio_from_waveform(waveform: Any, sample_rate: int, *, name: str = "audio input") -> DecodedAudio:
    """An in-memory waveform ([batch, channels, samples], [channels, samples] or [samples]; numpy or torch).

    Float samples are taken as they are (expected in [-1, 1]); integer samples are scaled like PCM.
    A batch uses its first item.
    """
    if hasattr(waveform, "detach"):
        waveform = waveform.detach().to("cpu").float().numpy()
    array = np.asarray(waveform)
    if array.ndim == 3:
        if array.shape[0] == 0:
            raise InputError(f"{name} is an empty batch")
        if array.shape[0] > 1:
            logger.warning("%s holds a batch of %d waveforms; using the first", name, array.shape[0])
        array = array[0]
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise InputError(f"{name} must be a waveform [channels, samples], got shape {array.shape}")
    if array.dtype in _INTEGER_SCALE:
        array = array.astype(np.float64) / _INTEGER_SCALE[array.dtype]
    elif array.dtype.kind != "f":
        raise InputError(f"{name} has unsupported sample type {array.dtype}")
    try:
        rate = int(sample_rate)
    except (TypeError, ValueError):
        raise InputError(f"{name} has no valid sample rate ({sample_rate!r})") from None
    return _check_audio(DecodedAudio(np.ascontiguousarray(array, dtype=np.float32), rate), name)


def audio_from_comfy(audio: Mapping[str, Any], *, name: str = "AUDIO input") -> DecodedAudio:
    """A ComfyUI ``AUDIO`` value: ``{"waveform": tensor [B, C, T], "sample_rate": int}``."""
    if not isinstance(audio, Mapping) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError(f"{name} must be a mapping with 'waveform' and 'sample_rate'")
    return audio_from_waveform(audio["waveform"], audio["sample_rate"], name=name)


def to_mono_16k(
    waveform: np.ndarray, sample_rate: int, target_rate: int = TARGET_SAMPLE_RATE, compat: str = "fixed"
) -> np.ndarray:
    """The mono ``target_rate`` signal: float32 [N].

    ``fixed``: channel mean, then SciPy's polyphase ``resample_poly`` (flatter passband and less aliasing than
    the sinc resampler: benchmarks/bench_resampler.py). ``original``: each channel resampled with
    torchaudio's windowed-sinc algorithm (:mod:`.resample`), then the mean, in the original's order.
    """
    array = np.asarray(waveform, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    rate, target = int(sample_rate), int(target_rate)
    if compat == "original":
        resampled = resample(array, rate, target) if rate != target else array
        return np.ascontiguousarray(resampled.mean(axis=0, dtype=np.float32), dtype=np.float32)
    mono = array.mean(axis=0, dtype=np.float32) if array.shape[0] > 1 else array[0].copy()
    if rate == target:
        return np.ascontiguousarray(mono, dtype=np.float32)
    from scipy.signal import resample_poly

    divisor = math.gcd(rate, target)
    resampled = resample_poly(mono, target // divisor, rate // divisor)
    return np.ascontiguousarray(resampled, dtype=np.float32)
