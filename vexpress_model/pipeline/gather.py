"""The VAE decode of a distributed run: split over the processes, gathered to rank 0 in frame order, in chunks.

The frames are cut into chunks of the pipeline's ``decode_chunk_frames`` and dealt round-robin
(:func:`~.sharding.decode_rounds`): in each round every rank decodes one chunk, then one ``gather`` brings the
round's chunks to rank 0, which hands them on in frame order. Rank 0 thus holds at most one round
(``world_size x decode_chunk_frames`` frames) at a time however long the clip is, and the decode runs on every
device at once. uint8 frames travel (a quarter of the float bytes); float32 only when asked for floats or when
rank 0 dumps ``video_float``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .hooks import Hooks
from .images import frames_to_uint8
from .sharding import decode_rounds, rank_frames


def _pixel_size(pipeline: Any, latents: torch.Tensor) -> tuple[int, int]:
    """Decoded frame size from the latent size: the VAE upsamples by 2 per block after the first (diffusers'
    ``vae_scale_factor``; 8 for SD's VAE)."""
    config = getattr(pipeline.models.vae, "config", None)
    blocks = getattr(config, "block_out_channels", None)
    factor = 2 ** (len(blocks) - 1) if blocks else 8
    return int(latents.shape[-2]) * factor, int(latents.shape[-1]) * factor


def decode_gathered(
    pipeline: Any,
    latents: torch.Tensor,
    group: Any = None,
    *,
    output: str = "uint8",
    hooks: Hooks | None = None,
) -> Iterator[np.ndarray]:
    """Decoded frames ``[n, H, W, 3]`` in frame order on rank 0 (uint8, or float32 in [0, 1]); nothing on the other
    ranks, which must iterate all the same (they decode and send while iterated). ``latents`` ``[1, 4, T, h, w]``
    must be the same on every rank (they are after sampling). A ``dump`` hook is honoured on rank 0 as
    ``VExpressPipeline.decode`` honours it (``video_float``, ``frames_uint8`` of the whole video). ``pipeline``: a
    ``VExpressPipeline``, whose ``decode`` each rank runs on its own chunks (it takes no process group: a decode is
    split only where this function is called, as ``generate.run_generation`` does)."""
    if output not in ("uint8", "float"):
        raise ValueError(f"output must be 'uint8' or 'float', got {output!r}")
    hooks = hooks or Hooks()
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    main = rank == 0
    keep = main and hooks.dump is not None
    # Floats travel when rank 0 needs them; the others cannot know whether rank 0 dumps, so the choice is made by
    # rank 0 and sent along with the first collective below.
    wants_float = torch.tensor([1 if (keep or output == "float") else 0], dtype=torch.int32)
    comm_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else None
    if comm_device is not None:
        wants_float = wants_float.to(comm_device)
    dist.broadcast(wants_float, src=0, group=group)
    as_float = bool(wants_float.item())

    num_frames = int(latents.shape[2])
    chunk = pipeline.decode_chunk_frames
    rounds = decode_rounds(num_frames, chunk, world_size)
    mine = rank_frames(rounds, rank)
    local: Iterator[np.ndarray] = iter(())
    if mine:
        index = torch.tensor(mine, device=latents.device)
        local = pipeline.decode(latents.index_select(2, index), output="float" if as_float else "uint8",
                                hooks=Hooks(cancel=hooks.cancel))
    height, width = _pixel_size(pipeline, latents)
    dtype = torch.float32 if as_float else torch.uint8
    kept: list[np.ndarray] = []
    for chunks in rounds:
        buffer = torch.zeros((chunk, height, width, 3), dtype=dtype)
        if rank < len(chunks):
            piece = torch.from_numpy(np.ascontiguousarray(next(local)))
            buffer[: piece.shape[0]] = piece
        if comm_device is not None:
            buffer = buffer.to(comm_device)
        # Every rank joins every round's gather, also those without a chunk in it, so the calls match up.
        received = [torch.empty_like(buffer) for _ in range(world_size)] if main else None
        dist.gather(buffer, received, dst=0, group=group)
        if not main:
            continue
        assert received is not None
        frames = torch.cat([received[i][: len(frames_range)].cpu() for i, frames_range in enumerate(chunks)])
        if keep:
            kept.append(frames.numpy())
        if as_float and output == "uint8":
            frames = frames_to_uint8(frames, pipeline.compat)
        yield frames.numpy()
    if keep and hooks.dump is not None and kept:
        video = np.concatenate(kept)
        hooks.dump("video_float", np.ascontiguousarray(video.transpose(3, 0, 1, 2)[None]))
        hooks.dump("frames_uint8", frames_to_uint8(torch.from_numpy(video), pipeline.compat).numpy())
