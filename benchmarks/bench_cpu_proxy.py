"""CPU proxy benchmark of the sampling pipeline (PERF.md §5): our pipeline vs an original-style loop, side by side.

    python benchmarks/bench_cpu_proxy.py                       # smoke size, 1 s / 4 s / 16 s of audio, 3 steps
    python benchmarks/bench_cpu_proxy.py --size proxy --seconds 1 4

Random weights of the real topology at reduced width (``vexpress_model.testing.bench_models``), fp32, a fixed
thread count (1 by default, like the parity runs of the original).
Each (implementation, audio length) runs in its own process, so that peak RSS is that run's own. Both
implementations get the same weights, inputs, seed and context windows (24/4, fixed-mode frame count
``round(30 x seconds)``), so their final latents must agree to float rounding -- the benchmark is void otherwise.

"original" is ``vexpress_model.testing.reference_loop`` driven the way the original pipeline drives its loop
(docs/spec.md §4.9-§4.16): kps images turned into float32 tensors and concatenated, guider features of both CFG
halves on the host, one UNet call per window with the UNet's plain paths, latents on the host, one-frame VAE decodes,
the whole float video kept, then converted to uint8. "ours" is ``VExpressPipeline`` with its defaults: kps drawn and
encoded chunk by chunk and only the conditional features kept, fast paths, all windows of a step batched, latents
kept on the compute device, decode in chunks streamed to a consumer that drops them (as the video writer would).
Its windows are batched 2 per UNet call by default (``--window-batch``; on a CPU batching gains little), the same
at every audio length, so that its peak RSS compares across lengths; ``--window-batch 0`` uses the pipeline's
memory budget instead (more windows per call: more memory, fewer calls).

Times are CPU seconds of the worker process (``time.process_time``): on a shared machine they are far steadier
than wall-clock seconds (also reported, as ``wall_s``). Reported per run: per-step time (the fastest of steps
2..N), UNet calls and images per call, ReferenceNet calls, VAE-decode calls, guider calls, decode time, total time,
peak RSS; then ratios ours / original, and the slopes in audio length (seconds per step per frame, MB of peak RSS
per frame). Last, a paired timing (``--paired-seconds``): both loops alternately in one process on the same
conditioning, the fastest step of each -- the steadiest per-step ratio on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vexpress_model.testing.bench_inputs import (
    CallCounter,
    audio_windows,
    kps_image_source,
    kps_track,
    peak_rss_mb,
    reference_image,
)
from vexpress_model.testing.bench_models import SIZES, build_models

HERE = Path(__file__).resolve().parent


def worker(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from vexpress_model.pipeline.hooks import Hooks, SamplingSettings
    from vexpress_model.pipeline.sampler import VExpressPipeline
    from vexpress_model.pipeline.windows import plan_frames
    from vexpress_model.testing.reference_loop import original_style_decode, original_style_sample

    torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    res = size.resolution
    models = build_models(args.size, "cpu", torch.float32, seed=0)
    unet_calls = CallCounter(models.denoising_unet)
    ref_calls = CallCounter(models.reference_net)
    guider_calls = CallCounter(models.kps_guider)
    decode_calls = CallCounter(models.vae, "decode")
    plan = plan_frames(args.seconds, 30.0, 24, 4, "fixed")
    track = kps_track(plan.num_frames, res)
    source = kps_image_source(track, res)
    image = reference_image(res)
    windows_in = audio_windows(plan.num_frames, size.audio_in)
    settings = SamplingSettings(args.steps, 3.5, 0.95, 3.0, 42)
    rss_after_build = peak_rss_mb()
    # CPU time of this process, not wall time: the machine may be shared, and the CPU seconds a run needs are what
    # transfers to a GPU's work; wall times are reported too.
    clock = time.process_time
    step_ends: list[float] = []
    wall_start = time.perf_counter()

    start = clock()
    if args.impl == "ours":
        pipeline = VExpressPipeline(models, device="cpu", compat="fixed", window_batch_size=args.window_batch)
        reference = pipeline.encode_reference(image)
        kps = pipeline.encode_kps(source, plan.num_frames)
        tokens = pipeline.project_audio(windows_in)
        prep_end = clock()
        hooks = Hooks(progress=lambda done, total, preview: preview is not None and step_ends.append(
            clock()))
        latents = pipeline.sample(reference, kps, tokens, plan, settings, hooks)
        sample_end = clock()
        frames = 0
        for chunk in pipeline.decode(latents):
            frames += len(chunk)  # a streaming writer would encode and drop the chunk here
        pipeline.finish()
    else:
        with torch.inference_mode():
            # As the original: every kps image to a float32 [1, 3, 1, H, W] tensor, concatenated.
            images = [torch.from_numpy(source(i, i + 1)).permute(3, 0, 1, 2).unsqueeze(0).float() / 255.0
                      for i in range(plan.num_frames)]
            kps_images = torch.cat(images, dim=2)
            del images
            features = torch.cat([models.kps_guider(kps_images[:, :, i : i + 16])
                                  for i in range(0, plan.num_frames, 16)], dim=2)
            tokens = models.audio_projection(windows_in)
            pixels = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0) * 2 - 1
            latent = models.vae.encode(pixels).latent_dist.mean * 0.18215
            bank = models.reference_net(latent)
        prep_end = clock()
        latents = original_style_sample(
            models.denoising_unet, bank, features, tokens, plan.windows, settings, device="cpu",
            dtype=torch.float32, on_step=lambda i, lat: step_ends.append(clock()),
        )
        sample_end = clock()
        video = original_style_decode(models.vae, latents, device="cpu")  # [1, 3, T, H, W] float32, all kept
        frames_uint8 = (video[0].transpose(1, 2, 3, 0) * 255).astype(np.uint8)
        frames = len(frames_uint8)
    end = clock()

    step_times = [b - a for a, b in zip([prep_end] + step_ends[:-1], step_ends)]
    np.save(args.latents_out, latents.float().cpu().numpy())
    return {
        "impl": args.impl,
        "seconds": args.seconds,
        "frames": plan.num_frames,
        "decoded_frames": frames,
        "windows": len(plan.windows),
        "steps": args.steps,
        "step_times_s": step_times,
        # The fastest of steps 2..N: load from other processes only ever adds time.
        "step_s": min(step_times[1:] or step_times),
        "prep_s": prep_end - start,
        "sample_s": sample_end - prep_end,
        "decode_s": end - sample_end,
        "total_s": end - start,
        "wall_s": time.perf_counter() - wall_start,
        "unet_calls": unet_calls.count,
        "unet_images_per_call": unet_calls.images / max(1, unet_calls.count),
        "reference_net_calls": ref_calls.count,
        "kps_guider_calls": guider_calls.count,
        "vae_decode_calls": decode_calls.count,
        "rss_after_build_mb": rss_after_build,
        "peak_rss_mb": peak_rss_mb(),
    }


def paired_worker(args: argparse.Namespace) -> dict:
    """Both loops in one process on the same conditioning, alternately, ``--repeats`` times each: the per-step
    CPU-time ratio without the between-process noise of a shared machine (no RSS here)."""
    import torch

    from vexpress_model.pipeline.hooks import Hooks, SamplingSettings
    from vexpress_model.pipeline.sampler import VExpressPipeline
    from vexpress_model.pipeline.windows import plan_frames
    from vexpress_model.testing.reference_loop import original_style_sample

    torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    models = build_models(args.size, "cpu", torch.float32, seed=0)
    plan = plan_frames(args.seconds, 30.0, 24, 4, "fixed")
    pipeline = VExpressPipeline(models, device="cpu", compat="fixed", window_batch_size=args.window_batch)
    reference = pipeline.encode_reference(reference_image(size.resolution))
    kps = pipeline.encode_kps(kps_image_source(kps_track(plan.num_frames, size.resolution), size.resolution),
                              plan.num_frames)
    tokens = pipeline.project_audio(audio_windows(plan.num_frames, size.audio_in))
    settings = SamplingSettings(args.steps, 3.5, 0.95, 3.0, 42)
    clock = time.process_time
    best = {"ours": float("inf"), "original": float("inf")}
    for _ in range(args.repeats):
        ends = [clock()]
        record = ends.append  # bound now: the callbacks must not see a later iteration's list
        pipeline.sample(reference, kps, tokens, plan, settings,
                        Hooks(progress=lambda d, t, preview, record=record: preview is not None and record(clock())))
        best["ours"] = min([best["ours"]] + [b - a for a, b in zip(ends[1:-1], ends[2:])])
        ends = [clock()]
        record = ends.append
        original_style_sample(models.denoising_unet, reference.bank, kps.features, tokens, plan.windows, settings,
                              device="cpu", dtype=torch.float32, on_step=lambda i, lat, record=record: record(clock()))
        best["original"] = min([best["original"]] + [b - a for a, b in zip(ends[1:-1], ends[2:])])
    return {"seconds": args.seconds, "frames": plan.num_frames, "windows": len(plan.windows),
            "ours_step_s": best["ours"], "original_step_s": best["original"]}


def _fit_slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return float("nan")
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def driver(args: argparse.Namespace) -> None:
    import numpy as np

    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.seconds:
            latents = {}
            for impl in ("original", "ours"):
                out = Path(tmp) / f"{impl}_{seconds}.npy"
                cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--seconds", str(seconds),
                       "--size", args.size, "--steps", str(args.steps), "--threads", str(args.threads),
                       "--window-batch", str(args.window_batch),
                       "--latents-out", str(out)]
                env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                if proc.returncode:
                    sys.stderr.write(proc.stdout + proc.stderr)
                    raise SystemExit(f"worker {impl} {seconds}s failed")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                results.append(result)
                latents[impl] = np.load(out)
                print(f"  {impl:8s} {seconds:5.1f} s audio: {result['frames']} frames, step {result['step_s']:.2f} s,"
                      f" total {result['total_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
            diff = float(np.abs(latents["ours"] - latents["original"]).max())
            for result in results[-2:]:
                result["latents_max_abs_vs_original"] = diff

    paired = []
    for seconds in args.paired_seconds:
        cmd = [sys.executable, __file__, "--worker", "--impl", "paired", "--seconds", str(seconds), "--size",
               args.size, "--steps", str(args.steps), "--threads", str(args.threads), "--window-batch",
               str(args.window_batch), "--repeats", str(args.repeats)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"paired worker {seconds}s failed")
        paired.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    print()
    print(f"CPU proxy benchmark: size {args.size} ({SIZES[args.size].unet} UNet, {SIZES[args.size].resolution}^2),"
          f" fp32, {args.threads} threads, {args.steps} DDIM steps, CFG 3.5, windows 24/4; times in CPU seconds")
    header = ("impl", "audio s", "frames", "windows", "UNet calls", "img/call", "refnet", "guider", "VAE dec",
              "step s", "decode s", "total s", "wall s", "peak RSS MB")
    print(" | ".join(header))
    for r in results:
        print(" | ".join(str(v) for v in (
            r["impl"], r["seconds"], r["frames"], r["windows"], r["unet_calls"], f"{r['unet_images_per_call']:.0f}",
            r["reference_net_calls"], r["kps_guider_calls"], r["vae_decode_calls"], f"{r['step_s']:.2f}",
            f"{r['decode_s']:.2f}", f"{r['total_s']:.1f}", f"{r['wall_s']:.1f}", f"{r['peak_rss_mb']:.0f}")))
    print()
    by = {(r["impl"], r["seconds"]): r for r in results}
    for seconds in args.seconds:
        o, n = by[("original", seconds)], by[("ours", seconds)]
        print(f"{seconds:5.1f} s: ours/original step time {n['step_s'] / o['step_s']:.3f}, total "
              f"{n['total_s'] / o['total_s']:.3f}, decode {n['decode_s'] / o['decode_s']:.3f}, UNet calls "
              f"{n['unet_calls']}/{o['unet_calls']}, peak RSS {n['peak_rss_mb']:.0f}/{o['peak_rss_mb']:.0f} MB; "
              f"latents max-abs ours vs original {n['latents_max_abs_vs_original']:.2e}")
    for impl in ("original", "ours"):
        rows = [by[(impl, s)] for s in args.seconds]
        frames = [r["frames"] for r in rows]
        step_slope = _fit_slope(frames, [r["step_s"] for r in rows])
        rss_slope = _fit_slope(frames, [r["peak_rss_mb"] for r in rows])
        per_frame = [r["step_s"] / r["frames"] for r in rows]
        print(f"{impl:8s}: step time per frame {', '.join(f'{x * 1000:.1f} ms' for x in per_frame)} "
              f"(slope {step_slope * 1000:.1f} ms/frame); peak RSS slope {rss_slope * 1024:.0f} KB/frame")
    for r in paired:
        print(f"paired, same process, fastest of {args.repeats} x {args.steps - 1} steps: {r['seconds']:g} s audio "
              f"({r['windows']} windows): ours {r['ours_step_s']:.2f} s, original {r['original_step_s']:.2f} s per "
              f"step -> ours/original {r['ours_step_s'] / r['original_step_s']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "paired": paired}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="smoke")
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: CPU time is then unaffected by other load on the machine)")
    parser.add_argument("--window-batch", type=int, default=2,
                        help="windows per UNet call for ours (default 2, the same at every audio length here, so "
                             "that peak RSS compares across lengths; 0 = the pipeline's memory budget)")
    parser.add_argument("--paired-seconds", type=float, nargs="*", default=[4.0],
                        help="audio lengths for the same-process paired step timing (default 4; none to skip)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of the paired timing")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=("original", "ours", "paired"), help=argparse.SUPPRESS)
    parser.add_argument("--latents-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.seconds = args.seconds[0]
        args.window_batch = args.window_batch or None
        print(json.dumps(paired_worker(args) if args.impl == "paired" else worker(args)))
    else:
        driver(args)


if __name__ == "__main__":
    main()
