#!/usr/bin/env python3
"""A real ComfyUI server working through a queue of mixed prompts: seconds per prompt, the server's RSS after each
prompt, and how often the pack's networks were loaded.

    COMFYUI_PATH=../shared/comfyui/ComfyUI COMFYUI_PYTHON=.venv-comfy/bin/python PYTHONPATH=. \\
        .venv-comfy/bin/python benchmarks/bench_comfyui_queue.py [--rounds 2] [--json figures.json]

Starts ComfyUI (``--cpu``) with the pack and a tiny random-weight model in a temporary base folder
(``tests/comfy_server.py``), then, per round, queues the 14 prompts of ``tests/comfy_queue.py`` at once from two
clients (10 valid ones at 64x64 to 80x64 with 2 steps, a missing and a corrupt audio file, two cancelled while they
run: one while sampling, one while its 1080p video is encoded); a later round uses other seeds, so nothing comes
from ComfyUI's cache but the loader's output. Then ``POST /free`` and one more prompt. Prints a Markdown table:
each prompt's outcome, its seconds (execution_start to its end, by the server's timestamps), the server's RSS
right after it (``/proc/<pid>/status``), and two load counters from the server log: the pack's loader line
(``V-Express: loaded``: the networks read from disk) and ComfyUI's ``Requested to load VExpress_*`` lines (a
network moved into ComfyUI's loaded list). The machine's other load shows in the seconds: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tests import comfy_queue, comfy_server

HOW_TO = "set COMFYUI_PATH (a ComfyUI checkout) and COMFYUI_PYTHON (its environment's python); see the docstring"


def round_prompts(number: int) -> list[tuple[str, Path, dict]]:
    """The mixed queue; round 2 and later with other seeds and names."""
    if number == 1:
        return comfy_queue.mixed_queue()
    return [(f"{name}_r{number}", workflow, {**settings, "seed": settings["seed"] + 1000 * number})
            for name, workflow, settings in comfy_queue.mixed_queue()]


def run_round(server, number: int) -> list[comfy_queue.Finished]:
    prompts = round_prompts(number)
    names = [name for name, _, _ in prompts]
    sampling_before = server.log_text().count(comfy_queue.SAMPLING_LINE)
    submitted = comfy_queue.submit_from_two_clients(server.url, prompts)
    rejected = [comfy_queue.Finished(name, "rejected", 0.0, comfy_queue.rss_bytes(server.process.pid), 0, 0)
                for name, s in submitted.items() if s.rejection is not None]
    ids = {name: s.prompt_id for name, s in submitted.items() if s.prompt_id}
    cancel_sampling = names[[n for n, _, _ in comfy_queue.mixed_queue()].index(comfy_queue.CANCEL_SAMPLING[0])]
    cancel_encoding = names[[n for n, _, _ in comfy_queue.mixed_queue()].index(comfy_queue.CANCEL_ENCODING[0])]
    watcher = comfy_queue.QueueWatcher(server, ids, cancel_sampling, cancel_encoding, sampling_before)
    return rejected + watcher.run(timeout=3600)


def after_free(server) -> comfy_queue.Finished:
    comfy_queue.free_and_settle(server)
    name = "after_free"
    entry, _ = server.run(comfy_queue.make_graph(comfy_queue.FIX_FACE, name, seed=99))
    log = server.log_text()
    outcome, seconds = comfy_queue.outcome_of(entry)
    return comfy_queue.Finished(name, outcome, seconds, comfy_queue.rss_bytes(server.process.pid),
                                log.count(comfy_queue.LOADED_LINE), log.count(comfy_queue.REQUESTED_LINE))


def table(rows: list[comfy_queue.Finished]) -> str:
    lines = ["| # | prompt | outcome | s | server RSS after (MiB) | pack loads | ComfyUI loads |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: |"]
    for index, row in enumerate(rows, start=1):
        loads = ("-", "-") if row.outcome == "rejected" else (row.loads, row.requested)
        lines.append(f"| {index} | {row.name} | {row.outcome} | {row.seconds:.1f} | {row.rss / 2**20:.0f} | "
                     f"{loads[0]} | {loads[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="how many times to queue the 14 prompts (default 1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not os.environ.get("COMFYUI_PATH") or not os.environ.get("COMFYUI_PYTHON"):
        print(f"error: no ComfyUI to run: {HOW_TO}", file=sys.stderr)
        return 2

    from vexpress_model.testing.random_model import write_random_model_folder

    with tempfile.TemporaryDirectory(prefix="bench_comfyui_queue_") as folder:
        root = Path(folder)
        model = write_random_model_folder(root / "tiny_model" / "model_ckpts", size="tiny", seed=0)
        started = time.monotonic()
        with comfy_server.running_server(root / "comfyui", model, HOW_TO) as server:
            up_s = time.monotonic() - started
            comfy_queue.make_inputs(server, root)
            rows: list[comfy_queue.Finished] = []
            for number in range(1, args.rounds + 1):
                rows += run_round(server, number)
            rows.append(after_free(server))
            queue_s = time.monotonic() - started - up_s
    ran = [r for r in rows if r.outcome == "success"]
    print(f"\nComfyUI up in {up_s:.1f} s; {len(rows)} prompts in {queue_s:.1f} s; valid prompts "
          f"{sum(r.seconds for r in ran) / len(ran):.1f} s on average\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"server_start_s": up_s, "prompts": [vars(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
