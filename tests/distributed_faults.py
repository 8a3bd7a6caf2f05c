"""A torchrun worker for the fault tests: the command line, with one rank made to fail in a chosen way.

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_faults.py MODE RANK -- <command-line flags>

MODE: ``raise`` (an exception in the second denoising-UNet call), ``kill`` (SIGKILL itself there), ``hang`` (sleep
there, so that only the process-group timeout ends the run), ``bad_input`` (that rank alone gets a missing
``--audio_path``). Every rank prints ``loading networks`` to stderr when it starts loading the V-Express networks,
so that a test can tell a failure reported before loading.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def main() -> int:
    mode, fault_rank = sys.argv[1], int(sys.argv[2])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    rank = int(os.environ["RANK"])

    import vexpress_model.models as models
    from vexpress_model.cli import main as cli_main
    from vexpress_model.models.unet import DenoisingUNet

    load = models.load_vexpress_models

    def announced_load(*args, **kwargs):
        print(f"rank {rank}: loading networks", file=sys.stderr, flush=True)
        return load(*args, **kwargs)

    models.load_vexpress_models = announced_load
    if rank == fault_rank and mode == "bad_input":
        argv[argv.index("--audio_path") + 1] = "missing_on_this_rank.wav"
    elif rank == fault_rank:
        forward = DenoisingUNet.forward
        calls = []

        def failing_forward(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                if mode == "raise":
                    raise RuntimeError(f"injected failure on rank {rank}")
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if mode == "hang":
                    time.sleep(600)
            return forward(self, *args, **kwargs)

        DenoisingUNet.forward = failing_forward
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
