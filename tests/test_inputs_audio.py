"""Audio decoding with PyAV (all the common formats and rates), mono 16 kHz, in-memory audio, bad audio."""

from __future__ import annotations

import logging
import wave
from pathlib import Path

import numpy as np
import pytest

from tests import media
from vexpress_model.errors import InputError
from vexpress_model.inputs.audio import (
    audio_from_comfy,
    audio_from_waveform,
    decode_audio,
    to_mono_16k,
)


@pytest.mark.parametrize(
    "case, name", [("S1_fix_face", "speech_16k_0p8s.wav"), ("S2_no_retarget", "speech_16k_1p1s.wav")]
)
def test_parity_wav_decoding(parity_dir: Path, case: str, name: str) -> None:
    decoded = decode_audio(parity_dir / "inputs" / name)
    outputs = parity_dir / "outputs" / case
    np.testing.assert_array_equal(decoded.waveform, np.load(outputs / "audio_waveform_raw.npy"))
    np.testing.assert_array_equal(to_mono_16k(decoded.waveform, 16000), np.load(outputs / "audio_waveform_16k.npy"))


@pytest.mark.parametrize("rate", media.AUDIO_RATES)
@pytest.mark.parametrize("layout, channels", [("mono", 1), ("stereo", 2)])
def test_pcm16_wav_is_exactly_int16_over_32768(media_dir: Path, rate: int, layout: str, channels: int) -> None:
    path = media_dir / f"speech_{rate}_{layout}.wav"
    decoded = decode_audio(path)
    with wave.open(str(path)) as handle:
        raw = np.frombuffer(handle.readframes(handle.getnframes()), "<i2").reshape(-1, channels).T
    assert decoded.sample_rate == rate and decoded.waveform.dtype == np.float32
    np.testing.assert_array_equal(decoded.waveform, raw.astype(np.float32) / 32768.0)


@pytest.mark.parametrize("rate", media.AUDIO_RATES)
@pytest.mark.parametrize("layout, channels", [("mono", 1), ("stereo", 2)])
@pytest.mark.parametrize("fmt", media.AUDIO_FORMATS)
def test_every_rate_and_layout_becomes_mono_16k(
    media_dir: Path, rate: int, layout: str, channels: int, fmt: str
) -> None:
    decoded = decode_audio(media_dir / f"speech_{rate}_{layout}.{fmt}")
    assert (decoded.sample_rate, decoded.num_channels) == (rate, channels)
    assert decoded.duration_s == pytest.approx(2.0, abs=0.03)
    mono = to_mono_16k(decoded.waveform, decoded.sample_rate)
    assert mono.ndim == 1 and mono.dtype == np.float32
    assert len(mono) == pytest.approx(32000, abs=500)
    source = media.speech_like(2.0, rate, channels, seed=rate)  # what was written
    expected = to_mono_16k(source, rate)
    n = min(len(mono), len(expected)) - 200
    if fmt == "wav":
        assert np.abs(mono[:n] - expected[:n]).max() < 1e-3  # PCM16 quantisation only
    else:
        assert np.corrcoef(mono[200:n], expected[200:n])[0, 1] > 0.8  # lossy (noise bursts suffer), but aligned in time


@pytest.mark.parametrize("suffix", [".flac", ".m4a", ".ogg"])
def test_flac_aac_and_ogg(tmp_path: Path, suffix: str) -> None:
    source = media.speech_like(1.5, 48000, 2, seed=3)
    path = media.write_audio(tmp_path / f"speech{suffix}", source, 48000)
    decoded = decode_audio(path)
    assert (decoded.sample_rate, decoded.num_channels) == (48000, 2)
    assert decoded.duration_s == pytest.approx(1.5, abs=0.03)
    if suffix == ".flac":
        assert np.abs(decoded.waveform - source).max() < 1e-4
    assert len(to_mono_16k(decoded.waveform, decoded.sample_rate)) == pytest.approx(24000, abs=400)


@pytest.mark.parametrize("rate", [8000, 11025, 32000, 96000])
def test_resampling_keeps_a_tone(tmp_path: Path, rate: int) -> None:
    """A 440 Hz tone at any rate comes out as the same 440 Hz tone at 16 kHz."""
    t = np.arange(int(0.5 * rate)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    mono = to_mono_16k(tone[None], rate)
    assert len(mono) == int(np.ceil(len(tone) * 16000 / rate))
    expected = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(len(mono)) / 16000)
    assert np.abs(mono[200:-200] - expected[200:-200]).max() < 5e-3


def test_channel_mean() -> None:
    stereo = np.stack([np.full(100, 0.5, np.float32), np.full(100, -0.25, np.float32)])
    np.testing.assert_allclose(to_mono_16k(stereo, 16000), np.full(100, 0.125))


def test_bad_audio_files(media_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot be decoded|no audio samples"):
        decode_audio(media_dir / "corrupt.mp3")
    with pytest.raises(InputError, match="zero length"):
        decode_audio(media_dir / "empty.wav")
    with pytest.raises(InputError, match="does not exist"):
        decode_audio(tmp_path / "missing.wav")
    (tmp_path / "nothing.mp3").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        decode_audio(tmp_path / "nothing.mp3")
    with pytest.raises(InputError, match="no audio track|cannot be decoded"):
        decode_audio(media_dir / "portrait.png")


def test_silence_is_valid_with_a_warning(media_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vexpress.inputs"):
        decoded = decode_audio(media_dir / "silence.wav")
    assert decoded.num_samples == 16000
    assert any("silent" in record.getMessage() for record in caplog.records)


def test_short_audio_decodes(media_dir: Path) -> None:
    assert decode_audio(media_dir / "speech_short.wav").duration_s == pytest.approx(0.3)


def test_in_memory_waveforms(caplog: pytest.LogCaptureFixture) -> None:
    import torch

    waveform = torch.from_numpy(media.speech_like(0.5, 22050, 2))[None]  # ComfyUI AUDIO: [B, C, T]
    decoded = audio_from_comfy({"waveform": waveform, "sample_rate": 22050})
    assert (decoded.sample_rate, decoded.num_channels, decoded.num_samples) == (22050, 2, 11025)
    assert audio_from_waveform(np.zeros(10, np.float32) + 0.1, 16000).waveform.shape == (1, 10)
    pcm = audio_from_waveform(np.array([[16384, -32768]], np.int16), 16000)
    np.testing.assert_array_equal(pcm.waveform, [[0.5, -1.0]])
    with caplog.at_level(logging.WARNING, logger="vexpress.inputs"):
        audio_from_waveform(np.full((2, 1, 100), 0.1, np.float32), 16000)
    assert any("batch of 2" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "value, rate, message",
    [
        (np.zeros((1, 0), np.float32), 16000, "zero length"),
        (np.full((1, 100), np.nan, np.float32), 16000, "NaN"),
        (np.zeros((1, 100), np.float32) + 0.1, 4000, "sample rate"),
        (np.zeros((2, 2, 2, 2), np.float32), 16000, "shape"),
        (np.array([["a"]]), 16000, "sample type"),
    ],
)
def test_bad_in_memory_audio(value: np.ndarray, rate: int, message: str) -> None:
    with pytest.raises(InputError, match=message):
        audio_from_waveform(value, rate)


def test_bad_comfy_audio() -> None:
    with pytest.raises(InputError, match="waveform"):
        audio_from_comfy({"samples": 1})
