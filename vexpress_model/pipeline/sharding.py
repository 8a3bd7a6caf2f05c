"""Which context windows and which decoded frames each process of a distributed run works on.

Pure functions of (items, rank, world size): every process computes every share itself, so no plan is sent around.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def shard_windows(windows: Sequence[range], rank: int, world_size: int) -> tuple[range, ...]:
    """The contiguous run of ``windows`` that ``rank`` evaluates, balanced by frames.

    Window *i* goes to the rank whose equal share of all window frames holds the window's middle frame (counted
    over the windows in order). With windows of one length (as the planner makes them) the shares differ by at
    most one window; with more ranks than windows some ranks get none (they still join every all-reduce).
    Contiguous shares keep each rank's frames together, so that a UNet call's batch and the kps features it reads
    are as local as in a single run.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    total = sum(len(window) for window in windows)
    share: list[range] = []
    before = 0
    for window in windows:
        middle = before + len(window) / 2
        if min(world_size - 1, int(middle * world_size // max(total, 1))) == rank:
            share.append(window)
        before += len(window)
    return tuple(share)


def local_windows(windows: Sequence[range], group: Any) -> tuple[range, ...]:
    """This process's share of ``windows`` in the torch.distributed ``group`` (all of them when ``group`` is None)."""
    if group is None:
        return tuple(windows)
    import torch.distributed as dist

    return shard_windows(windows, dist.get_rank(group), dist.get_world_size(group))


def decode_rounds(num_frames: int, chunk_frames: int, world_size: int) -> list[list[range]]:
    """The split decode's schedule: frame chunks of ``chunk_frames`` dealt round-robin, ``world_size`` per round.

    Round *k* holds chunks ``k*W .. k*W + W - 1`` (rank *r* decodes the *r*-th of them; a round at the end may
    have fewer), so rank 0 receives each round's frames in order and never holds more than one round.
    """
    if chunk_frames < 1 or world_size < 1:
        raise ValueError("chunk_frames and world_size must be at least 1")
    chunks = [range(start, min(start + chunk_frames, num_frames)) for start in range(0, num_frames, chunk_frames)]
    return [chunks[start : start + world_size] for start in range(0, len(chunks), world_size)]


def rank_frames(rounds: list[list[range]], rank: int) -> list[int]:
    """The frames ``rank`` decodes, in its order (its chunk of each round)."""
    return [frame for chunks in rounds if rank < len(chunks) for frame in chunks[rank]]
