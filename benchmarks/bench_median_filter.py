"""The tail after decoding: median filter (when on) + uint8 + H.264 encode, ours vs the original's way.

Decoded frames arrive in chunks of 2 (the pipeline's VAE decode chunk). Measured, in CPU seconds per frame:

- ``ours, filter off``: :class:`VideoWriter` (one H.264 + AAC encode);
- ``ours, filter on``: :func:`median_filtered_chunks` (each frame filtered once) + :class:`VideoWriter`;
- ``previous streaming filter``: SciPy's ``median_filter`` on [previous, held, new, new] to emit 2 frames (what
  the writer did before: 4 frames filtered per 2 emitted) + :class:`VideoWriter`;
- ``original``: the original's ``save_video`` (SPEC §4.15): the whole clip's float frames median-filtered per
  frame with torch (reflect padding, 27 values, ``median``), truncated to uint8, written as mp4v by OpenCV,
  then re-encoded to H.264 (FFmpeg's CLI in the original; PyAV's libx264 with default settings here).

    python benchmarks/bench_median_filter.py --frames 60 --size 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vexpress_model.outputs.median_filter import median_filtered_chunks
from vexpress_model.outputs.video import VideoWriter

FPS = 25


def test_frames(count: int, size: int) -> np.ndarray:
    """Smooth moving gradients with a little noise, float in [0, 1] like the VAE's output."""
    y, x = np.mgrid[0:size, 0:size] / size
    t = np.arange(count)[:, None, None] / count
    base = 0.5 + 0.4 * np.sin(2 * np.pi * (x[None] + 0.5 * y[None] + t))
    noise = np.random.default_rng(0).normal(0, 0.02, (count, size, size, 3))
    return np.clip(base[..., None] + noise, 0, 1).astype(np.float32)


def chunks_of_two(frames: np.ndarray):
    for start in range(0, len(frames), 2):
        yield frames[start : start + 2]


def write(path: Path, chunks) -> None:
    with VideoWriter(path, FPS) as writer:
        for chunk in chunks:
            writer.write(chunk)


def ours(frames: np.ndarray, path: Path, median: bool) -> None:
    chunks = ((chunk * 255).round().astype(np.uint8) for chunk in chunks_of_two(frames))
    write(path, median_filtered_chunks(chunks) if median else chunks)


def previous_streaming(frames: np.ndarray, path: Path) -> None:
    from scipy.ndimage import median_filter

    def filtered():
        previous, pending = None, []
        for chunk in chunks_of_two(frames):
            pending.extend((chunk * 255).round().astype(np.uint8))
            before = previous if previous is not None else pending[1]
            yield median_filter(np.stack([before, *pending]), size=(3, 3, 3, 1), mode="mirror")[1:-1]
            previous, pending = pending[-2], pending[-1:]
        last = pending[0]
        yield median_filter(np.stack([previous, last, previous]), size=(3, 3, 3, 1), mode="mirror")[1:2]

    write(path, filtered())


def original(frames: np.ndarray, path: Path) -> None:
    import av
    import cv2

    video = torch.from_numpy(frames).permute(3, 0, 1, 2)  # [C, T, H, W] as the original holds it
    padded = torch.nn.functional.pad(video[None], (1, 1, 1, 1, 1, 1), mode="reflect")[0]
    out = torch.empty_like(video)
    for t in range(video.shape[1]):
        window = padded[:, t : t + 3].unfold(2, 3, 1).unfold(3, 3, 1)  # [C, 3, H, W, 3, 3]
        out[:, t] = window.permute(0, 2, 3, 1, 4, 5).reshape(*window.shape[:1], *window.shape[2:4], 27).median(-1)[0]
    uint8 = (out.permute(1, 2, 3, 0).numpy() * 255).astype(np.uint8)
    temporary = path.with_name(path.stem + "-temp.mp4")
    size = (uint8.shape[2], uint8.shape[1])
    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
    for frame in uint8:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    with av.open(str(temporary)) as source, av.open(str(path), "w") as target:
        stream = target.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for frame in source.decode(video=0):
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                target.mux(packet)
        for packet in stream.encode(None):
            target.mux(packet)
    temporary.unlink()


def timed(function, *args) -> float:
    start = time.process_time()
    function(*args)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = test_frames(args.frames, args.size)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        figures = {
            "ours, filter off": timed(ours, frames, out / "a.mp4", False),
            "ours, filter on": timed(ours, frames, out / "b.mp4", True),
            "previous streaming filter (on)": timed(previous_streaming, frames, out / "c.mp4"),
            "original (filter always on)": timed(original, frames, out / "d.mp4"),
        }
    reference = figures["original (filter always on)"]
    print(f"{args.frames} frames of {args.size}x{args.size}, {args.threads} thread(s), CPU seconds:")
    print("| tail | s | ms/frame | vs original |")
    print("| --- | --- | --- | --- |")
    for name, seconds in figures.items():
        print(f"| {name} | {seconds:.2f} | {1000 * seconds / args.frames:.1f} | {seconds / reference:.2f} |")


if __name__ == "__main__":
    main()
