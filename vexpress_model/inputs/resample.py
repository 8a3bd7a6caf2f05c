"""Band-limited resampling with a Hann-windowed sinc kernel: the algorithm of ``torchaudio.functional.resample``.

The original V-Express resamples speech with ``torchaudio.functional.resample`` at its defaults
(``lowpass_filter_width=6``, ``rolloff=0.99``, ``resampling_method="sinc_interp_hann"``). This module
computes the same thing in plain torch, so parity does not need torchaudio (which has no release for every
torch that ComfyUI ships):

- the rate ratio is reduced by its gcd to ``orig / new``;
- the cut-off is ``rolloff * min(orig, new)`` (in reduced units) and the kernel reaches
  ``width = ceil(lowpass_filter_width * orig / cutoff)`` input samples to each side;
- one kernel row per output phase ``j`` (``new`` rows), evaluated at
  ``t = (i / orig - j / new) * cutoff`` for ``i`` in ``[-width, width + orig)``, clamped to
  ``+-lowpass_filter_width``, as ``sinc(pi t) * cos(pi t / (2 * lowpass_filter_width))**2 * cutoff / orig``;
- the input is zero-padded by ``width`` on the left and ``width + orig`` on the right, convolved with
  stride ``orig``, the phases interleaved, and cut to ``ceil(new * length / orig)`` samples.

The kernel is built in the waveform's dtype (float32 here), as torchaudio does when given a float32 input,
so the results agree to float rounding. tests/test_inputs_resample.py checks that against outputs of the
real torchaudio (made once by scripts/make_resample_fixtures.py).
"""

from __future__ import annotations

import math

import numpy as np

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


def _sinc_kernel(orig: int, new: int, dtype) -> tuple[object, int]:
    """The [new, 1, 2 * width + orig] kernel for the reduced ratio ``orig / new`` and its half width."""
    import torch

    cutoff = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / cutoff)
    # Same operation order and dtype as torchaudio, so the float32 kernel rounds the same way.
    positions = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + positions
    t *= cutoff
    t = t.clamp_(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t *= math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernel *= window * (cutoff / orig)
    return kernel, width


def resample(waveform: np.ndarray, orig_freq: int, new_freq: int) -> np.ndarray:
    """Resample float32 ``waveform`` [..., samples] from ``orig_freq`` to ``new_freq`` Hz (each row alone)."""
    import torch

    array = np.ascontiguousarray(waveform, dtype=np.float32)
    if int(orig_freq) == int(new_freq):
        return array.copy()
    divisor = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // divisor, int(new_freq) // divisor
    signal = torch.from_numpy(array)
    batch_shape, length = signal.shape[:-1], signal.shape[-1]
    rows = signal.reshape(-1, length)
    kernel, width = _sinc_kernel(orig, new, rows.dtype)
    padded = torch.nn.functional.pad(rows, (width, width + orig))
    with torch.no_grad():
        phases = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig)
    interleaved = phases.transpose(1, 2).reshape(rows.shape[0], -1)
    # torchaudio rounds the length through a float32 tensor; for long inputs that can differ from math.ceil.
    target_length = int(torch.ceil(torch.as_tensor(new * length / orig, dtype=torch.float32)))
    out = interleaved[:, :target_length].reshape(*batch_shape, -1)
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)
