"""Launching real torchrun processes from the tests: ``python -m torch.distributed.run`` on a free local port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def error_lines(self) -> list[str]:
        """Our one-line messages (torchrun's own summary and log lines are not among them)."""
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


def torchrun(nproc: int, target: Sequence[str], cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
             ) -> Finished:
    """Run ``target`` (``["-m", "module", args...]`` or ``["script.py", args...]``) under torchrun with ``nproc``
    local processes, one torch thread each (as torchrun sets by default)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *target]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
    return Finished(result.returncode, result.stdout, result.stderr, time.monotonic() - started)
