"""Full-size GPU benchmark of the sampling pipeline: random weights, fp16, 512², 25 steps (PERF.md §3, §4A).

    python benchmarks/bench_gpu_full.py                      # 4 s of audio, defaults of the original
    python benchmarks/bench_gpu_full.py --seconds 10 --window-batch 4
    python benchmarks/bench_gpu_full.py --original-steps 2   # also time 2 steps of the original-style loop

Builds the five networks at full size directly on the GPU in fp16 (no files), draws V-Kps images for a moving
face track, uses random per-frame audio windows (wav2vec2 is not timed: it runs once per clip and costs ~1 % of
the work), then runs our pipeline: reference pass, kps features, audio tokens, the windowed CFG DDIM loop, chunked
VAE decode (frames converted to uint8 and dropped, as the streaming writer would). Prints seconds per output
frame, per-step time, UNet calls, peak VRAM and the time of each stage. Designed to finish well inside 10 minutes
on one H100 for the default 4 s (model building included).

With ``--original-steps N`` it afterwards runs N steps of the original-style loop (one UNet call per window, plain
paths, latents and kps features on the host; ``testing.reference_loop``) on the same inputs and prints the
per-step ratio -- the GPU counterpart of the CPU proxy's side-by-side.
"""

from __future__ import annotations

import argparse
import statistics
import time

from vexpress_model.testing.bench_inputs import audio_windows, kps_image_source, kps_track, reference_image
from vexpress_model.testing.bench_models import SIZES, build_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio length (default 4)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.5)
    parser.add_argument("--context-frames", type=int, default=24)
    parser.add_argument("--context-overlap", type=int, default=4)
    parser.add_argument("--window-batch", type=int, default=None, help="windows per UNet call (default: auto)")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--offload", action="store_true", help="offload each network after its stage")
    parser.add_argument("--no-fast-paths", action="store_true")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu only to smoke-test the script")
    parser.add_argument("--original-steps", type=int, default=0,
                        help="also run this many steps of the original-style loop for a side-by-side")
    args = parser.parse_args()

    import torch

    from vexpress_model.pipeline.hooks import Hooks, SamplingSettings
    from vexpress_model.pipeline.sampler import VExpressPipeline
    from vexpress_model.pipeline.windows import plan_frames
    from vexpress_model.testing.reference_loop import original_style_sample

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (or --device cpu with --size smoke to test the script)")
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    if not cuda:
        dtype = torch.float32
    torch.backends.cudnn.benchmark = True

    def sync() -> None:
        if cuda:
            sync()

    def vram_gib(reserved: bool = False) -> float:
        if not cuda:
            return float("nan")
        return (torch.cuda.max_memory_reserved() if reserved else torch.cuda.max_memory_allocated()) / 2**30
    t_start = time.perf_counter()
    models = build_models(args.size, device, dtype)
    sync()
    t_built = time.perf_counter()
    size = SIZES[args.size]
    res = size.resolution
    params = sum(p.numel() for m in (models.denoising_unet, models.reference_net) for p in m.parameters())
    name = torch.cuda.get_device_name() if cuda else "CPU"
    print(f"{name} | built {args.size} models ({params / 1e9:.2f} B UNet params) "
          f"in {t_built - t_start:.1f} s", flush=True)

    plan = plan_frames(args.seconds, 30.0, args.context_frames, args.context_overlap, "fixed")
    track = kps_track(plan.num_frames, res)
    source = kps_image_source(track, res)
    settings = SamplingSettings(args.steps, args.guidance, 0.95, 3.0, 42)
    pipeline = VExpressPipeline(
        models, device=device, compat="fixed", offload=args.offload, fast_paths=not args.no_fast_paths,
        window_batch_size=args.window_batch, compile_unet=args.compile,
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        sync()
        marks[name] = time.perf_counter()

    step_ends: list[float] = []

    def progress(done: int, total: int, preview) -> None:
        if preview is not None:
            sync()
            step_ends.append(time.perf_counter())
            print(f"  step {len(step_ends)}/{args.steps} ({done}/{total} UNet calls) "
                  f"{step_ends[-1] - (step_ends[-2] if len(step_ends) > 1 else marks['prep']):.2f} s", flush=True)

    mark("start")
    reference = pipeline.encode_reference(reference_image(res))
    kps = pipeline.encode_kps(source, plan.num_frames)
    tokens = pipeline.project_audio(audio_windows(plan.num_frames, size.audio_in))
    mark("prep")
    latents = pipeline.sample(reference, kps, tokens, plan, settings, Hooks(progress=progress))
    mark("sample")
    frames = 0
    for chunk in pipeline.decode(latents):
        frames += len(chunk)
    mark("decode")
    pipeline.finish()
    peak = vram_gib()
    reserved = vram_gib(reserved=True)

    steps = [b - a for a, b in zip([marks["prep"]] + step_ends[:-1], step_ends)]
    step_s = statistics.median(steps[1:] or steps)
    gen = marks["decode"] - marks["start"]
    batches = pipeline.stats["unet_calls"] // max(1, args.steps)
    dtype_name = str(dtype).replace("torch.", "")
    print()
    print(f"audio {args.seconds:g} s -> {plan.num_frames} frames @ {plan.fps:g} fps, {len(plan.windows)} windows of "
          f"{args.context_frames}, {batches} UNet call(s) per step "
          f"({pipeline.stats['unet_images'] // max(1, pipeline.stats['unet_calls'])} images each), "
          f"{args.steps} steps, CFG {args.guidance}, {dtype_name}, compile={args.compile}, offload={args.offload}")
    print(f"prep (reference + kps + audio tokens): {marks['prep'] - marks['start']:.2f} s")
    print(f"sampling: {marks['sample'] - marks['prep']:.2f} s, median step {step_s:.3f} s, "
          f"per window-step {step_s / len(plan.windows) * 1000:.1f} ms")
    print(f"decode: {marks['decode'] - marks['sample']:.2f} s for {frames} frames "
          f"({pipeline.stats['vae_decode_calls']} VAE calls)")
    print(f"generation: {gen:.2f} s = {gen / plan.num_frames:.3f} s per frame "
          f"({gen / args.seconds:.2f} s per audio second)")
    print(f"peak VRAM: {peak:.2f} GiB allocated, {reserved:.2f} GiB reserved")

    if args.original_steps > 0:
        features = kps.features
        short = SamplingSettings(args.original_steps, args.guidance, 0.95, 3.0, 42)
        ends: list[float] = []
        sync()
        begin = time.perf_counter()

        def on_step(index: int, _latents) -> None:
            sync()
            ends.append(time.perf_counter())

        # The original-style loop runs the full step schedule's first N timesteps of a N-step schedule; per-step
        # cost does not depend on the timestep, so its step time compares directly.
        original_style_sample(models.denoising_unet, reference.bank, features, tokens, plan.windows, short,
                              device=device, dtype=dtype, on_step=on_step)
        orig_steps = [b - a for a, b in zip([begin] + ends[:-1], ends)]
        orig_step = statistics.median(orig_steps[1:] or orig_steps)
        print(f"original-style loop: median step {orig_step:.3f} s ({len(plan.windows)} UNet calls per step); "
              f"ours / original = {step_s / orig_step:.3f}")
        print(f"peak VRAM incl. original-style run: {vram_gib():.2f} GiB")
    print(f"wall clock incl. model building: {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
