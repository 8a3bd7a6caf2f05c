"""Writing an audio file with PyAV (no ffmpeg binary): the codec follows the file extension.

``.wav`` PCM16, ``.mp3`` MP3 (LAME), ``.m4a`` / ``.aac`` AAC, ``.flac`` FLAC, ``.ogg`` / ``.opus`` Opus.
The file appears under its name only once it is complete (temporary name + rename).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import discard, partial_path, require_writable_file

# suffix -> (container format, codec, sample format the encoder takes)
AUDIO_CODECS = {
    ".wav": ("wav", "pcm_s16le", "s16"),
    ".mp3": ("mp3", "libmp3lame", "fltp"),
    ".m4a": ("ipod", "aac", "fltp"),
    ".aac": ("adts", "aac", "fltp"),
    ".flac": ("flac", "flac", "s16"),
    ".ogg": ("ogg", "libopus", "flt"),
    ".opus": ("ogg", "libopus", "flt"),
}
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)
_MP3_RATES = (48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def check_audio_path(path: str | Path) -> Path:
    """The output path if an audio file with a supported extension can be written there; InputError if not."""
    path = Path(path)
    if path.suffix.lower() not in AUDIO_CODECS:
        raise InputError(f"audio output {path}: unsupported extension; use one of {', '.join(AUDIO_CODECS)}")
    return require_writable_file(path, "the audio file", folders="create")


def _encode_rate(codec: str, rate: int) -> int:
    if codec == "libopus":
        return min(_OPUS_RATES, key=lambda r: (r < rate, abs(r - rate)))
    if codec == "libmp3lame" and rate not in _MP3_RATES:
        return min(_MP3_RATES, key=lambda r: (r < rate, abs(r - rate)))
    return rate


def write_audio_file(path: str | Path, waveform: np.ndarray, sample_rate: int) -> Path:
    """Encode float32 audio [channels, samples] (or [samples]) in [-1, 1] to ``path``; returns the path."""
    import av

    path = check_audio_path(path)
    container_format, codec, sample_format = AUDIO_CODECS[path.suffix.lower()]
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None]
    if samples.shape[0] > 2:
        samples = samples.mean(axis=0, keepdims=True, dtype=np.float32)
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    temporary = partial_path(path)
    try:
        with av.open(str(temporary), mode="w", format=container_format) as container:
            stream = container.add_stream(codec, rate=_encode_rate(codec, int(sample_rate)))
            stream.layout = layout
            stream.format = sample_format
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.clip(samples, -1.0, 1.0)), format="fltp",
                                               layout=layout)
            frame.sample_rate = int(sample_rate)
            frame.pts = 0
            frame.time_base = Fraction(1, int(sample_rate))
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        os.replace(temporary, path)
    except BaseException as exc:
        discard(temporary)
        if isinstance(exc, (av.FFmpegError, OSError)):
            raise InputError(f"cannot write the audio file {path} ({exc})") from None
        raise
    return path
