"""One generation over several processes with torch.distributed, as launched by ``torchrun``.

``torchrun`` starts one process per device and tells each its place through environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). This module owns what a process does with them:

* :func:`torchrun_launch` reads them (None outside torchrun, or for a single process);
* :func:`process_device` picks the process's device: ``cuda:LOCAL_RANK`` (one GPU per process), or the CPU;
* :class:`DistributedRun` joins and leaves the process group (NCCL on CUDA, gloo on the CPU) with a bounded
  timeout, so that a collective waiting for a process that hangs or died fails instead of waiting forever;
* :meth:`DistributedRun.agree` makes every process learn whether a phase failed anywhere (a bad input seen by one
  rank), so that all stop together with the first failing rank's message instead of hanging in the next collective;
* :func:`is_collective_failure` tells a failure caused by another process (a collective that lost its peers) from
  a failure of this process's own work, so that only the process where it started reports it as the cause.

Faults that happen outside a collective are torchrun's business: when a worker exits non-zero or is killed, the
torchrun agent sends SIGTERM to the others (then SIGKILL); :func:`raise_on_sigterm` turns that SIGTERM into an
exception so that temporary files are removed on the way out.

* :func:`gathered_decode` is the VAE decode of a distributed run (``VExpressPipeline.decode`` calls it when it has a
  process group): the frames are cut into chunks of the pipeline's ``decode_chunk_frames`` and dealt round-robin
  (:func:`~.windows.decode_rounds`); in each round every rank decodes one chunk, then one ``gather`` brings the
  round's chunks to rank 0, which hands them on in frame order. Rank 0 thus holds at most one round
  (``world_size x decode_chunk_frames`` frames) at a time however long the clip is, and the decode runs on every
  device at once. uint8 frames travel (a quarter of the float bytes); float32 only when asked for floats or when
  rank 0 dumps ``video_float``.

Which windows each process samples is in :mod:`.windows` (:func:`~.windows.shard_windows`).
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ..errors import DistributedSetupError, ProcessFailedError, VExpressError
from .hooks import Hooks
from .windows import decode_rounds, rank_frames

logger = logging.getLogger("vexpress.distributed")

# Seconds a collective may wait for the other processes. The longest legitimate wait is the first collective after
# model loading (processes load at different speeds); a dead or hung peer is noticed within this time.
DEFAULT_TIMEOUT_S = 900.0

T = TypeVar("T")


class Terminated(BaseException):
    """SIGTERM arrived (torchrun stops the other workers when one fails). A BaseException, like
    KeyboardInterrupt, so that ``except Exception`` clauses do not swallow it; ``finally`` clauses still run."""


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def name(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


def torchrun_launch(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The torchrun variables of this process, or None when it was not started by torchrun (or is its only
    process: one process runs exactly like a plain single run)."""
    environ = os.environ if environ is None else environ
    if not all(name in environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return None
    try:
        launch = Launch(int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ["LOCAL_RANK"]))
    except ValueError:
        raise DistributedSetupError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (they are set by torchrun); unset them to run "
            "a single process"
        ) from None
    return launch if launch.world_size > 1 else None


def process_device(device: str, launch: Launch | None) -> str:
    """The device a process runs on: as asked outside torchrun; under torchrun ``auto`` and ``cuda`` mean
    ``cuda:LOCAL_RANK`` (one GPU per process; ``auto`` without CUDA means the CPU). ``cuda`` on a machine without
    CUDA, or with fewer GPUs than processes, is a :class:`DistributedSetupError` (torch would fail deep inside
    ``set_device`` otherwise)."""
    if launch is None:
        return device
    if device in ("auto", "cuda"):
        if not torch.cuda.is_available():
            if device == "auto":
                return "cpu"
            raise DistributedSetupError(
                "--device cuda was asked for but this torch build sees no CUDA GPU; use --device cpu (every "
                "process then runs on the CPU)", same_on_every_process=True,
            )
        gpus = torch.cuda.device_count()
        if launch.local_rank >= gpus:
            raise DistributedSetupError(
                f"{launch.name()}: each process takes its own GPU (cuda:LOCAL_RANK), but this machine has {gpus}; "
                f"start torchrun with --nproc_per_node {gpus} or fewer, or use --device cpu"
            )
        return f"cuda:{launch.local_rank}"
    if device != "cpu":
        raise DistributedSetupError(
            f"--device {device}: under torchrun each process uses its own GPU (cuda:LOCAL_RANK); "
            "use --device auto, cuda or cpu"
        )
    return device


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` was raised inside a torch.distributed call (a collective that lost or timed out on its
    peers) -- a consequence of a failure elsewhere, not a cause."""
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(error, dist_error):
        return True
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and "torch/distributed/" in frames[-1].filename.replace(os.sep, "/")


def raise_on_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated` in the main thread; returns the previous handler. For front ends
    run under torchrun only (a library never installs signal handlers)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated("stopped by SIGTERM")

    return signal.signal(signal.SIGTERM, handler)


def record_error_for_torchrun(error: BaseException) -> None:
    """Write ``error`` where torchrun's failure summary reads it (``TORCHELASTIC_ERROR_FILE``), so that the
    summary shows the cause instead of "error_file: <N/A>"."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    try:
        ErrorHandler().record_exception(error)
    except OSError:  # the summary is a courtesy; the error itself is reported on stderr either way
        logger.debug("could not write torchrun's error file", exc_info=True)


@dataclass(frozen=True)
class PhaseFailure:
    """A phase failed on at least one rank: the first failing rank and its message (as :meth:`DistributedRun.agree`
    hands it to every rank)."""

    rank: int
    message: str
    user_error: bool
    same_everywhere: bool


class DistributedRun:
    """Membership of this process in the process group of a torchrun launch (``launch``: its rank, world size,
    whether it is the main process).

    Use as a context manager: it joins the group on entry (``backend`` None: NCCL for a CUDA device, gloo for the
    CPU) and leaves it on exit. A group that is already initialised (the caller's own) is used and left alone.
    ``timeout_s`` bounds every collective.
    """

    def __init__(
        self, launch: Launch, device: torch.device | str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
        backend: str | None = None,
    ) -> None:
        self.launch = launch
        self.device = torch.device(device)
        self.timeout_s = float(timeout_s)
        self.backend = backend or ("nccl" if self.device.type == "cuda" else "gloo")
        self._owns_group = False

    @property
    def group(self) -> Any:
        """The process group (the default group of this launch)."""
        return dist.group.WORLD

    def __enter__(self) -> DistributedRun:
        launch = self.launch
        if dist.is_initialized():
            if dist.get_world_size() != launch.world_size or dist.get_rank() != launch.rank:
                raise DistributedSetupError("the initialised process group does not match RANK / WORLD_SIZE")
            return self
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=self.timeout_s)}
        if self.backend == "nccl":
            kwargs["device_id"] = self.device  # connects NCCL now, so that a broken setup fails here
        try:
            dist.init_process_group(self.backend, rank=launch.rank, world_size=launch.world_size, **kwargs)
        except (RuntimeError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DistributedSetupError(
                f"{launch.name()} could not join the process group ({self.backend}): {first_line}; check "
                "MASTER_ADDR / MASTER_PORT (torchrun's --rdzv_endpoint) and that every machine can reach it"
            ) from None
        self._owns_group = True
        logger.debug("%s joined the %s process group on %s", launch.name(), self.backend, self.device)
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback_: Any) -> None:
        if self._owns_group and dist.is_initialized():
            # After a failure the peers may be gone; destroying the group must not wait for them.
            try:
                dist.destroy_process_group()
            except Exception:
                logger.debug("destroying the process group failed", exc_info=True)
        self._owns_group = False

    def agree(self, error: BaseException | None) -> PhaseFailure | None:
        """Collective: every rank tells whether its part of a phase failed. Returns None when none did, else the
        failure of the lowest failing rank (the same on every rank). Call it on every rank, also after a failure:
        a rank that skipped it would leave the others waiting until the timeout."""
        mine = None
        if error is not None:
            mine = (str(error) or type(error).__name__, isinstance(error, VExpressError))
        outcomes: list[Any] = [None] * self.launch.world_size
        dist.all_gather_object(outcomes, mine, group=self.group)
        failed = [(rank, outcome) for rank, outcome in enumerate(outcomes) if outcome is not None]
        if not failed:
            return None
        rank, (message, user_error) = failed[0]
        same = len(failed) == self.launch.world_size and all(outcome[0] == message for _, outcome in failed)
        return PhaseFailure(rank=rank, message=message, user_error=user_error, same_everywhere=same)

    def run_phase(self, work: Callable[[], T]) -> T:
        """Run ``work`` on this rank, then :meth:`agree`: its result when it succeeded on every rank, else
        :class:`ProcessFailedError` raised on every rank with the first failing rank's message (without the rank
        when every rank failed the same way, as the same bad input does)."""
        result: Any = None
        error: Exception | None = None
        try:
            result = work()
        except Exception as exc:
            error = exc
        failure = self.agree(error)
        if failure is None:
            return result
        message = failure.message
        if not failure.same_everywhere:
            message = f"rank {failure.rank} of {self.launch.world_size}: {message}"
        raise ProcessFailedError(message, rank=failure.rank, user_error=failure.user_error) from error


# ------------------------------------------------------------------------------------------------ split decode

LocalDecode = Callable[[torch.Tensor, bool], Iterator[np.ndarray]]
"""``decode(latents, as_float)``: this rank's latents ``[1, 4, t, h, w]`` decoded in chunks of ``chunk_frames``
frames, float32 in [0, 1] when ``as_float`` else uint8 (``VExpressPipeline``'s own decode)."""


def gathered_decode(
    decode: LocalDecode,
    latents: torch.Tensor,
    group: Any,
    *,
    chunk_frames: int,
    frame_size: tuple[int, int],
    to_uint8: Callable[[torch.Tensor], torch.Tensor],
    output: str = "uint8",
    hooks: Hooks | None = None,
) -> Iterator[np.ndarray]:
    """Decoded frames ``[n, H, W, 3]`` (``frame_size`` is ``(H, W)``) in frame order on rank 0 (uint8, or float32
    in [0, 1]); nothing on the other ranks, which must iterate all the same (they decode and send while iterated).
    ``latents`` ``[1, 4, T, h, w]`` must be the same on every rank (they are after sampling). A ``dump`` hook is
    honoured on rank 0 as a single process's decode honours it (``video_float``, ``frames_uint8`` of the whole
    video; ``to_uint8`` converts the floats as the pipeline does)."""
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
    rounds = decode_rounds(num_frames, chunk_frames, world_size)
    mine = rank_frames(rounds, rank)
    local: Iterator[np.ndarray] = iter(())
    if mine:
        local = decode(latents.index_select(2, torch.tensor(mine, device=latents.device)), as_float)
    height, width = frame_size
    dtype = torch.float32 if as_float else torch.uint8
    kept: list[np.ndarray] = []
    for chunks in rounds:
        buffer = torch.zeros((chunk_frames, height, width, 3), dtype=dtype)
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
            frames = to_uint8(frames)
        yield frames.numpy()
    if keep and hooks.dump is not None and kept:
        video = np.concatenate(kept)
        hooks.dump("video_float", np.ascontiguousarray(video.transpose(3, 0, 1, 2)[None]))
        hooks.dump("frames_uint8", to_uint8(torch.from_numpy(video)).numpy())
