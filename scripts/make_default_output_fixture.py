"""Writes tests/fixtures/default_output.npz: the short clip (``vexpress_model.testing.short_clip``) on the tiny
random model (seed 0) with the default sampling, one thread. Made once from the code before the fast modes
(issue 17) so that tests/test_fast_modes.py proves the default path unchanged; rerun only if the default output
is meant to change.

    PYTHONPATH=$PWD python scripts/make_default_output_fixture.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from vexpress_model.testing.random_model import write_random_model_folder
from vexpress_model.testing.short_clip import load_tiny_models, run_short_clip

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "default_output.npz"


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_random_model_folder(Path(tmp) / "model_ckpts", size="tiny", seed=0)
        dumps = run_short_clip(load_tiny_models(folder))
    np.savez_compressed(OUT, **dumps)
    print(f"wrote {OUT}: " + ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in dumps.items()))


if __name__ == "__main__":
    main()
