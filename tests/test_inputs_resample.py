"""The sinc resampler against the real torchaudio.functional.resample.

tests/fixtures/resample_torchaudio.npz was made once by scripts/make_resample_fixtures.py: it runs the
resampling functions of the torchaudio 2.9.1 wheel (their pure-Python source, with this project's torch) on
deterministic int16 test signals at nine source rates, a 60 ms and very short (1, 2, 7, 50 samples) stereo
input each, and stores the float32 16 kHz outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vexpress_model.inputs.audio import to_mono_16k
from vexpress_model.inputs.resample import resample

FIXTURE = Path(__file__).parent / "fixtures" / "resample_torchaudio.npz"
RATES = (8000, 11025, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {name: data[name] for name in data.files}


def _cases(reference: dict[str, np.ndarray], rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    lengths = sorted(int(name.rsplit("_", 1)[1]) for name in reference if name.startswith(f"in_{rate}_"))
    assert len(lengths) == 5, f"fixture for {rate} Hz is incomplete"
    return [
        (reference[f"in_{rate}_{n}"].astype(np.float32) / np.float32(32768.0), reference[f"out_{rate}_{n}"])
        for n in lengths
    ]


@pytest.mark.parametrize("rate", RATES)
def test_stereo_equals_torchaudio(reference, rate):
    for waveform, expected in _cases(reference, rate):
        got = resample(waveform, rate, 16000)
        assert got.shape == expected.shape, f"{rate} Hz, {waveform.shape[1]} samples"
        assert np.abs(got - expected).max() <= TOLERANCE


@pytest.mark.parametrize("rate", RATES)
def test_mono_equals_torchaudio(reference, rate):
    for waveform, expected in _cases(reference, rate):
        got = resample(waveform[1], rate, 16000)
        assert got.shape == expected[1].shape
        assert np.abs(got - expected[1]).max() <= TOLERANCE


@pytest.mark.parametrize("rate", (22050, 44100, 48000))
def test_to_mono_16k_averages_after_resampling_like_the_original(reference, rate):
    waveform, expected = _cases(reference, rate)[-1]  # the 60 ms input
    mono = to_mono_16k(waveform, rate, compat="original")
    assert mono.dtype == np.float32
    assert mono.shape == (int(np.ceil(waveform.shape[1] * 16000 / rate)),)
    np.testing.assert_allclose(mono, expected.mean(axis=0), rtol=0, atol=TOLERANCE)


def test_default_resampler_keeps_a_tone_and_is_not_the_sinc_one(reference):
    """compat="fixed" resamples with SciPy's polyphase filter (measured better: benchmarks/bench_resampler.py): a
    1 kHz tone at 44.1 kHz comes out as the same tone at 16 kHz (known values ``sin(2 pi 1000 n / 16000)``, edges
    aside), and the fixture's input does not come out as torchaudio's sinc output."""
    rate = 44100
    tone = np.sin(2 * np.pi * 1000 * np.arange(4410) / rate).astype(np.float32)
    out = to_mono_16k(np.stack([tone, tone]), rate)
    assert out.shape == (1600,) and out.dtype == np.float32
    expected = np.sin(2 * np.pi * 1000 * np.arange(1600) / 16000)
    np.testing.assert_allclose(out[200:-200], expected[200:-200], rtol=0, atol=2e-3)
    waveform, sinc = _cases(reference, rate)[-1]
    assert np.abs(to_mono_16k(waveform, rate) - sinc.mean(axis=0)).max() > 10 * TOLERANCE


def test_same_rate_is_a_copy():
    waveform = np.arange(10, dtype=np.float32)
    out = resample(waveform, 16000, 16000)
    np.testing.assert_array_equal(out, waveform)
    assert out is not waveform
