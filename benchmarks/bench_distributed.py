"""Distributed sampling benchmark (issue 11): one clip over 1, 2, ... processes with torch.distributed (gloo, CPU).

    python benchmarks/bench_distributed.py                          # proxy size, 8 s clip, 1 and 2 processes
    python benchmarks/bench_distributed.py --size smoke --seconds 2 --processes 1 2 3

Each process count runs under torchrun (``python -m torch.distributed.run``), one torch thread per process, on the
random-weight proxy model of ``bench_cpu_proxy.py`` (``vexpress_model.testing.bench_models``), fp32, windows 24/4,
CFG 3.5, two windows per UNet call. Every process builds the same weights (seeded) and computes the conditions
itself (reference pass, kps features, audio tokens: "prep"), as the command line does under torchrun.

Reported per process count: per-step wall time (the fastest of steps 2..N: load from other processes only ever
adds time) and CPU seconds per step of each rank, bytes all-reduced per step (counted at ``torch.distributed``),
prep time and (``--decode``) decode time, windows per rank; then the speed-up of N processes over one, and the
final latents' max-abs difference from the single-process run (the run is void unless ~0; ~1e-5 remains because
one process batches other windows per UNet call than two do). Last, the modelled speed-up for N GPUs:

    S(N) = W * t_w / (ceil(W / N) * t_w + 2 (N - 1) / N * B / bandwidth)

with W windows per step, t_w the time of one window-step on one device, B the bytes all-reduced per step (the
per-frame prediction sums, float32 [1, 4, T, h, w]). On a CPU t_w is measured (the single-process step / W); for
GPUs the table uses --gpu-window-s (default 0.2 s: PERF.md's modelled H100 window-step at 40-50 % MFU; the V100
figure from the original's README is 2.3 s) and the full model's latent size for B.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vexpress_model.testing.bench_inputs import audio_windows, kps_image_source, kps_track, reference_image
from vexpress_model.testing.bench_models import SIZES, build_models


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    import torch.distributed as dist

    from vexpress_model.pipeline.sampler import Hooks, SamplingSettings, VExpressPipeline
    from vexpress_model.pipeline.windows import local_windows, plan_frames

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    group = None
    if world > 1:
        dist.init_process_group("gloo")
        group = dist.group.WORLD
    reduced_bytes: list[int] = []
    if group is not None:
        all_reduce = dist.all_reduce

        def counted_all_reduce(tensor, *a, **k):
            reduced_bytes.append(tensor.numel() * tensor.element_size())
            return all_reduce(tensor, *a, **k)

        dist.all_reduce = counted_all_reduce

    size = SIZES[args.size]
    res = size.resolution
    models = build_models(args.size, "cpu", torch.float32, seed=0)
    plan = plan_frames(args.seconds, 30.0, 24, 4, "fixed")
    source = kps_image_source(kps_track(plan.num_frames, res), res)
    pipeline = VExpressPipeline(models, device="cpu", compat="fixed", window_batch_size=2, process_group=group)
    settings = SamplingSettings(args.steps, 3.5, 0.95, 3.0, 42)

    wall, cpu = time.perf_counter, time.process_time
    prep_wall, prep_cpu = wall(), cpu()
    reference = pipeline.encode_reference(reference_image(res))
    kps = pipeline.encode_kps(source, plan.num_frames)
    tokens = pipeline.project_audio(audio_windows(plan.num_frames, size.audio_in))
    prep = (wall() - prep_wall, cpu() - prep_cpu)
    marks: list[tuple[float, float]] = [(wall(), cpu())]
    hooks = Hooks(progress=lambda done, total, preview: preview is not None and marks.append((wall(), cpu())))
    latents = pipeline.sample(reference, kps, tokens, plan, settings, hooks)
    decode_wall, decode_cpu = wall(), cpu()
    frames = 0
    if args.decode:
        for chunk in pipeline.decode(latents):  # gathered to rank 0 with a process group
            frames += len(chunk)
    decode = (wall() - decode_wall, cpu() - decode_cpu)
    steps_wall = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
    steps_cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
    mine = {
        "rank": rank,
        "windows": len(local_windows(plan.windows, group)),
        "step_wall_s": steps_wall,
        "step_cpu_s": steps_cpu,
        "allreduce_bytes_per_step": sum(reduced_bytes) / max(1, len(steps_wall)),
        "prep_wall_s": prep[0], "prep_cpu_s": prep[1],
        "decode_wall_s": decode[0], "decode_cpu_s": decode[1],
        "frames_received": frames,
    }
    ranks = [mine]
    if group is not None:
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
    if rank == 0:
        np.save(args.latents_out, latents.float().cpu().numpy())
        print(json.dumps({"processes": world, "frames": plan.num_frames, "windows": len(plan.windows),
                          "latent_hw": list(latents.shape[-2:]), "ranks": ranks}))
    if group is not None:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _fastest(values: list[float]) -> float:
    return min(values[1:] or values)


def modelled_speedup(windows: int, processes: int, window_s: float, reduce_bytes: float, bandwidth: float) -> float:
    """S(N) of the module docstring: the slowest rank's windows plus a ring all-reduce of the prediction sums."""
    reduce_s = 2 * (processes - 1) / processes * reduce_bytes / bandwidth
    return windows * window_s / (math.ceil(windows / processes) * window_s + reduce_s)


def driver(args: argparse.Namespace) -> None:
    import numpy as np

    results = {}
    load = os.getloadavg()[0]
    print(f"load average before the run: {load:.2f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for processes in args.processes:
            out = Path(tmp) / f"latents_{processes}.npy"
            command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                       "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), __file__, "--worker",
                       "--size", args.size, "--seconds", str(args.seconds), "--steps", str(args.steps),
                       "--latents-out", str(out), *(["--decode"] if args.decode else [])]
            env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            started = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if proc.returncode:
                sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
                raise SystemExit(f"{processes} processes failed")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["run_wall_s"] = time.perf_counter() - started
            result["latents"] = np.load(out)
            results[processes] = result
            step = max(_fastest(r["step_wall_s"]) for r in result["ranks"])
            print(f"  {processes} processes: step {step:.2f} s wall, run {result['run_wall_s']:.0f} s", flush=True)

    base = results[args.processes[0]]
    base_step = _fastest(base["ranks"][0]["step_wall_s"])
    print()
    print(f"distributed CPU benchmark: size {args.size} ({SIZES[args.size].unet} UNet, {SIZES[args.size].resolution}^2)"
          f", fp32, gloo, 1 thread per process, {args.seconds:g} s clip = {base['frames']} frames in "
          f"{base['windows']} windows of 24/4, {args.steps} steps, 2 windows per UNet call")
    print("processes | windows per rank | step wall s (slowest rank) | step CPU s per rank | all-reduce bytes/step | "
          "prep wall s | decode wall s | speed-up | latents max-abs vs 1")
    for processes, result in results.items():
        ranks = result["ranks"]
        step = max(_fastest(r["step_wall_s"]) for r in ranks)
        diff = float(np.abs(result["latents"] - base["latents"]).max())
        print(" | ".join(str(v) for v in (
            processes, "/".join(str(r["windows"]) for r in ranks), f"{step:.2f}",
            "/".join(f"{_fastest(r['step_cpu_s']):.2f}" for r in ranks),
            f"{ranks[0]['allreduce_bytes_per_step']:.0f}", f"{max(r['prep_wall_s'] for r in ranks):.2f}",
            f"{max(r['decode_wall_s'] for r in ranks):.2f}", f"{base_step / step:.2f}x ({step / base_step:.2f} of 1)",
            f"{diff:.1e}")))
    windows = base["windows"]
    window_s = base_step / windows
    h, w = base["latent_hw"]
    cpu_bytes = 4 * base["frames"] * h * w * 4
    print(f"\nmodelled, this CPU (t_w = {window_s:.2f} s per window-step, B = {cpu_bytes / 1e6:.2f} MB, gloo over "
          f"loopback at {args.cpu_bandwidth / 1e9:g} GB/s):")
    for processes in args.model_processes:
        print(f"  N = {processes:2d}: windows per process {math.ceil(windows / processes):3d}, "
              f"S = {modelled_speedup(windows, processes, window_s, cpu_bytes, args.cpu_bandwidth):.2f}")
    full_bytes = 4 * base["frames"] * 64 * 64 * 4  # the full model: 512^2 frames, 64x64 latents, float32 sums
    print(f"modelled, GPUs (full model, t_w = {args.gpu_window_s:g} s per window-step, B = {full_bytes / 1e6:.1f} MB "
          f"per step for {base['frames']} frames):")
    for processes in args.model_processes:
        cells = [f"{modelled_speedup(windows, processes, args.gpu_window_s, full_bytes, bw * 1e9):.2f} at "
                 f"{bw:g} GB/s" for bw in args.gpu_bandwidths]
        print(f"  N = {processes:2d}: ideal {windows / math.ceil(windows / processes):.2f}; " + ", ".join(cells))
    if args.json:
        for result in results.values():
            result.pop("latents")
        Path(args.json).write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="proxy")
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length (default 8 s: 240 frames)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2],
                        help="process counts to run, the first being the baseline (default 1 2)")
    parser.add_argument("--model-processes", type=int, nargs="+", default=[1, 2, 4, 8, 12])
    parser.add_argument("--gpu-window-s", type=float, default=0.2)
    parser.add_argument("--gpu-bandwidths", type=float, nargs="+", default=[1.0, 10.0, 100.0],
                        help="all-reduce bandwidths in GB/s for the GPU model (10 GbE, 100 Gb/s InfiniBand, NVLink)")
    parser.add_argument("--cpu-bandwidth", type=float, default=1e9, help="bytes/s of gloo over loopback (model)")
    parser.add_argument("--decode", action="store_true", help="also time the (split) VAE decode of all frames")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--latents-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
