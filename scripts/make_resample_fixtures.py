"""Make tests/fixtures/resample_torchaudio.npz: outputs of the real ``torchaudio.functional.resample``.

Not run in CI; it documents how the fixture was made. torchaudio has no release for the torch the tests use,
and its resampler is pure Python over torch, so this script takes the resampling functions' source from a
torchaudio wheel and runs them with the installed torch (the compiled extension is not needed)::

    pip download --no-deps torchaudio==2.9.1 -d /tmp/ta
    .venv/bin/python scripts/make_resample_fixtures.py /tmp/ta/torchaudio-2.9.1-*.whl

For every source rate it stores a deterministic test signal (tones + noise, int16 PCM, stereo) of a long
(60 ms) and several very short lengths, and torchaudio's float32 output at 16 kHz with its default
arguments. The tests compare vexpress_model.inputs.resample against these outputs.
"""

from __future__ import annotations

import argparse
import ast
import math
import typing
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

RATES = (8000, 11025, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
TARGET = 16000
SHORT_LENGTHS = (1, 2, 7, 50)
FUNCTIONS = ("_get_sinc_resample_kernel", "_apply_sinc_resample_kernel", "resample")
OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "resample_torchaudio.npz"


def torchaudio_resample(wheel: Path):
    """``torchaudio.functional.resample`` from the wheel, compiled with this interpreter's torch."""
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("torchaudio/functional/functional.py").decode()
    tree = ast.parse(source)
    keep = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in FUNCTIONS]
    for node in keep:
        node.decorator_list = []
    namespace = {"math": math, "torch": torch, "warnings": warnings, "Tensor": torch.Tensor,
                 "Optional": typing.Optional, "_CPU": torch.device("cpu")}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(wheel), "exec"), namespace)
    return namespace["resample"]


def test_signal(rate: int, length: int, seed: int) -> np.ndarray:
    """int16 stereo: speech-band tones, a tone near the 8 kHz Nyquist of the target, and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / rate
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 2500 * t + 0.5)
    right = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.1 * np.sin(2 * np.pi * min(7900, rate / 2.2) * t)
    stereo = np.stack([left, right]) + 0.05 * rng.standard_normal((2, length))
    return np.clip(np.round(stereo * 32767), -32768, 32767).astype(np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", type=Path, help="a torchaudio wheel (pip download --no-deps torchaudio==2.9.1)")
    args = parser.parse_args()
    resample = torchaudio_resample(args.wheel)
    arrays: dict[str, np.ndarray] = {}
    for index, rate in enumerate(RATES):
        for length in (int(rate * 0.06), *SHORT_LENGTHS):
            pcm = test_signal(rate, length, seed=index * 100 + length % 97)
            # PCM16 scaled by its full range, as the decoder hands it to the resampler.
            waveform = torch.from_numpy(pcm.astype(np.float32) / np.float32(32768.0))
            out = resample(waveform, rate, TARGET)
            arrays[f"in_{rate}_{length}"] = pcm
            arrays[f"out_{rate}_{length}"] = out.numpy().astype(np.float32)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUTPUT, **arrays)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes, {len(arrays) // 2} cases, torch {torch.__version__})")


if __name__ == "__main__":
    main()
