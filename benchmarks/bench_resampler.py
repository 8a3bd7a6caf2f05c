"""Resampler quality: the torchaudio-style sinc resampler vs SciPy's polyphase ``resample_poly`` (to 16 kHz).

For each source rate, single test tones go through both resamplers and the output is analysed with a
Hann-windowed FFT over its middle (edges excluded):

- passband error: the largest gain deviation (dB) for tones from 100 Hz to 4 kHz (where speech energy is)
  and to 7 kHz (below 90 % of the lower Nyquist; wav2vec2's input is 16 kHz, so 8 kHz is its Nyquist);
- aliasing: the output level (dB relative to the input tone) of a tone at 8.5 kHz (just above the new
  Nyquist) and the worst over tones from 10 kHz up to the source Nyquist, which a perfect resampler removes
  entirely (they fold into 0-8 kHz otherwise).

Each cell is "sinc / polyphase".

    python benchmarks/bench_resampler.py
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import resample_poly

from vexpress_model.inputs.resample import resample as sinc_resample

RATES = (8000, 11025, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
TARGET = 16000


def polyphase(signal: np.ndarray, rate: int) -> np.ndarray:
    divisor = math.gcd(rate, TARGET)
    return resample_poly(signal, TARGET // divisor, rate // divisor).astype(np.float32)


def level_db(output: np.ndarray, frequency: float) -> float:
    """Amplitude of the component at ``frequency`` (Hz, at 16 kHz) in dB re 1: a Hann-windowed projection
    over the middle of the output (no FFT-bin scalloping, edges excluded)."""
    middle = output[len(output) // 8: -len(output) // 8].astype(np.float64)
    window = np.hanning(len(middle))
    phase = np.exp(-2j * np.pi * frequency / TARGET * np.arange(len(middle)))
    amplitude = 2 * abs(np.sum(window * middle * phase)) / window.sum()
    return 20 * math.log10(max(amplitude, 1e-12))


def folded(frequency: float) -> float:
    """Where a tone lands in 0-8 kHz after sampling at 16 kHz."""
    return abs(frequency - TARGET * round(frequency / TARGET))


def _levels(resampler, rate: int, frequencies) -> list[float]:
    t = np.arange(rate // 4) / rate  # 250 ms per tone
    return [level_db(resampler(np.sin(2 * np.pi * f * t).astype(np.float32), rate), folded(f)) for f in frequencies]


def measure(resampler, rate: int) -> list[str]:
    """Passband error to 4 kHz and to 7 kHz, alias level at 8.5 kHz and the worst from 10 kHz up (dB)."""
    nyquist = min(rate, TARGET) / 2
    figures = []
    for top in (4000, 7000):
        tones = np.arange(100, min(top, 0.9 * nyquist) + 1, 100)
        figures.append(f"{max(abs(x) for x in _levels(resampler, rate, tones)):.3f}")
    for tones in ([8500], np.arange(10000, rate / 2, 500)):
        tones = [f for f in tones if f < rate / 2]
        figures.append(f"{max(_levels(resampler, rate, tones)):.1f}" if tones else "-")
    return figures


def main() -> None:
    print("| source rate | passband error to 4 kHz (dB) | to 7 kHz (dB) | alias of 8.5 kHz (dB) "
          "| worst alias >= 10 kHz (dB) |")
    print("| --- | --- | --- | --- | --- |")
    for rate in RATES:
        sinc = measure(lambda x, r: sinc_resample(x, r, TARGET), rate)
        poly = measure(polyphase, rate)
        print(f"| {rate} | " + " | ".join(f"{a} / {b}" for a, b in zip(sinc, poly)) + " |")


if __name__ == "__main__":
    main()
