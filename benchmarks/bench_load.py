#!/usr/bin/env python3
"""Load time and peak host memory of ``load_vexpress_models`` on a full-size model folder (random weights).

    python benchmarks/bench_load.py [--dir /tmp/somewhere] [--keep] [--dtypes fp16 fp32] [--configs_dir DIR]

Writes a full-size random folder in the released layout (about 6.1 GB: the five fp16 V-Express files, the fp32
VAE and wav2vec2) into a temporary directory outside the repository, then loads it on the CPU once per dtype, each
time in a fresh subprocess, and reports: load time, RSS right after loading, RSS after reading every weight once
(an fp16 file loaded as fp16 stays memory-mapped, so its pages count only once touched), and the peak RSS of the
subprocess (``ru_maxrss``; also cross-checked with ``RUSAGE_CHILDREN`` in the parent). The folder is deleted
afterwards unless ``--keep``. The files are in the page cache when loaded (just written): warm-cache figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(model_dir: str, dtype: str) -> None:
    import torch

    from vexpress_model.models import load_vexpress_models

    start = time.perf_counter()
    models = load_vexpress_models(model_dir, dtype, "cpu")
    load_s = time.perf_counter() - start
    rss_loaded = _rss_mb()
    weight_bytes = 0
    total = 0.0
    for name in ("reference_net", "denoising_unet", "kps_guider", "audio_projection", "vae", "audio_encoder"):
        for p in getattr(models, name).parameters():
            weight_bytes += p.numel() * p.element_size()
            total += float(p.detach().float().sum())  # touch every page once
    print(json.dumps({
        "dtype": dtype,
        "load_s": round(load_s, 2),
        "rss_after_load_mb": round(rss_loaded),
        "rss_after_touch_mb": round(_rss_mb()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "weights_mb": round(weight_bytes / 2**20),
        "threads": torch.get_num_threads(),
        "checksum_finite": total == total,
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="where to write the folder (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the folder")
    parser.add_argument("--dtypes", nargs="+", default=["fp16", "fp32"])
    parser.add_argument("--configs_dir", help="shared/vexpress/real_configs/model_ckpts")
    parser.add_argument("--child", nargs=2, metavar=("MODEL_DIR", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    from vexpress_model.testing.random_model import write_random_model_folder

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="vexpress_bench_"))
    model_dir = base / "model_ckpts"
    try:
        start = time.perf_counter()
        write_random_model_folder(model_dir, size="full", seed=0, configs_dir=args.configs_dir)
        files = [p for p in model_dir.rglob("*") if p.is_file()]
        vx_bytes = sum(p.stat().st_size for p in (model_dir / "v-express").glob("*.bin"))
        all_bytes = sum(p.stat().st_size for p in files)
        print(f"wrote {model_dir} in {time.perf_counter() - start:.0f} s: V-Express files {vx_bytes / 2**20:.0f} MiB,"
              f" all weight files {all_bytes / 2**20:.0f} MiB")
        for dtype in args.dtypes:
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            run = subprocess.run([sys.executable, __file__, "--child", str(model_dir), dtype], capture_output=True,
                                 text=True, cwd=REPO_ROOT)
            if run.returncode:
                print(run.stdout, run.stderr, file=sys.stderr)
                return 1
            result = json.loads(run.stdout.strip().splitlines()[-1])
            after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            result["children_maxrss_mb"] = round(after / 1024) if after > before else None
            result["peak_over_weights"] = round(result["peak_rss_mb"] / result["weights_mb"], 2)
            result["peak_over_files"] = round(result["peak_rss_mb"] / (all_bytes / 2**20), 2)
            print(json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
