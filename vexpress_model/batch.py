"""``python -m vexpress_model.batch JOBS.jsonl [flags]``: many clips, each a whole generation, with a results manifest.

The jobs file holds one JSON object per line whose keys are the command line's long flag names without the dashes
(``{"reference_image_path": "a.png", "audio_path": "a.mp3", "output_path": "out/a.mp4"}``; a flag without a value
is ``true`` / ``false``); blank lines and lines starting with ``#`` are skipped. The flags given on the batch command
line are the defaults of every job, so that a job lists only what differs. Each job needs its own ``output_path``.

* One process runs the jobs in turn, loading the networks once (again only when a job needs others: another model
  folder, dtype or test stage). Under ``torchrun`` each process takes the next job from a shared queue (torchrun's
  own key-value store) and runs it whole on its own device, so that N GPUs run N clips at once.
* The results manifest (JSON Lines, ``<jobs>.results.jsonl`` beside the jobs file unless ``--results``) gets one
  record per finished job as it finishes: ``job`` (line number in the jobs file), ``status`` (``done`` or
  ``failed``), ``output``, ``seconds``, ``error``. A failing job is recorded and the others go on.
* Running the same command again skips every job whose output is recorded as done and still exists, so a batch
  cut short (a crash, a pre-empted node) resumes where it stopped; failed jobs are tried again.

Exit codes: 0 every job done, 1 some job failed (see the manifest), 2 the jobs file itself is unusable.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cli import EXIT_USER_ERROR, build_parser, one_line
from .errors import InputError, VExpressError
from .outputs.manifest import ResultsManifest

logger = logging.getLogger("vexpress.batch")

EXIT_SOME_FAILED = 1
QUEUE_PREFIX = "vexpress-batch/"


@dataclass
class Job:
    """One line of the jobs file: its command-line namespace, or why it cannot run."""

    number: int  # line number in the jobs file
    args: argparse.Namespace | None
    output: str
    error: str | None = None


def _models_key(request: Any, inputs: Any) -> tuple[Any, ...]:
    """What decides the loaded networks: two requests with the same key can share one loaded model set."""
    return (repr(inputs.paths), str(inputs.device), str(inputs.dtype), request.offload, request.test_stage)


class ModelCache:
    """Keeps the last loaded model set, so that a run of jobs loads the networks once (``python -m
    vexpress_model.batch``); a job needing other networks (another folder, dtype, device, test stage) replaces it."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._models: Any = None

    def get(self, request: Any, inputs: Any) -> Any:
        key = _models_key(request, inputs)
        if key != self._key:
            from .generate import load_models

            self._models, self._key = None, None  # the old set goes before the new one is loaded
            self._models = load_models(request, inputs)
            self._key = key
        return self._models


def build_batch_parser() -> argparse.ArgumentParser:
    """The command line's parser (its flags give every job's defaults) plus the jobs file and ``--results``."""
    parser = build_parser(inputs_required=False, prog="python -m vexpress_model.batch")
    parser.description = "Run a jobs file (JSON Lines of command-line flags): many clips, one manifest, resumable."
    parser.add_argument("jobs", help="jobs file: one JSON object of command-line flags (without --) per line")
    parser.add_argument("--results", default="",
                        help="results manifest (JSON Lines); default: <jobs>.results.jsonl beside the jobs file")
    return parser


def job_namespace(defaults: argparse.Namespace, flags: dict[str, Any]) -> argparse.Namespace:
    """The namespace of one job: ``defaults`` (the batch command line) overridden by the job's ``flags``, parsed by
    the command line's own parser so that types and choices are checked exactly as for the command."""
    parser = build_parser(inputs_required=False, for_jobs=True)
    known = vars(parser.parse_args([]))
    namespace = copy.copy(defaults)
    argv: list[str] = []
    for key, value in flags.items():
        if key not in known:
            raise InputError(f"unknown key {key!r}; the keys are the command line's long flag names without the "
                             "dashes (reference_image_path, audio_path, output_path, ...)")
        if isinstance(known[key], bool):  # an on/off flag
            if not isinstance(value, bool):
                raise InputError(f"{key} is an on/off flag: give true or false, not {value!r}")
            setattr(namespace, key, value)
        elif value is None or isinstance(value, (dict, list)):
            raise InputError(f"{key}: give a string or a number, not {json.dumps(value)}")
        else:
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    parsed = parser.parse_args(argv, namespace=namespace)
    for required in ("reference_image_path", "audio_path"):
        if not getattr(parsed, required):
            raise InputError(f"no {required}: give it in the job or on the batch command line")
    return parsed


def read_jobs(path: Path, defaults: argparse.Namespace) -> list[Job]:
    """Every job of the jobs file; a line that is not a usable job becomes a Job with its error (recorded as
    failed, so that the others still run). Raises InputError when the file itself cannot be read."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: Notepad's byte-order mark is fine
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the jobs file {path} ({getattr(exc, 'strerror', None) or exc})") from None
    jobs: list[Job] = []
    outputs: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        output = ""
        try:
            try:
                flags = json.loads(line)
            except ValueError as exc:
                raise InputError(f"not JSON ({exc})") from None
            if not isinstance(flags, dict):
                raise InputError("a job is a JSON object of flags, e.g. {\"audio_path\": \"a.mp3\", ...}")
            output = str(flags.get("output_path", ""))
            if not output:
                raise InputError("no output_path: every job needs its own")
            args = job_namespace(defaults, flags)
            key = str(Path(args.output_path).resolve())
            if key in outputs:
                raise InputError(f"output_path {args.output_path} is also the output of the job on line "
                                 f"{outputs[key]}")
            outputs[key] = number
            jobs.append(Job(number, args, args.output_path))
        except InputError as error:
            jobs.append(Job(number, None, output, f"{path}, line {number}: {one_line(error)}"))
    if not jobs:
        raise InputError(f"the jobs file {path} holds no jobs; write one JSON object of flags per line")
    return jobs


def _claimed_jobs(pending: list[Job], launch: Any, timeout_s: float) -> Iterator[tuple[Job, Any]]:
    """The jobs this process runs, with the store of a torchrun launch (None otherwise). Under torchrun each
    process takes the next unclaimed job from a counter in torchrun's key-value store when it is free, so long
    and short jobs even out over the processes."""
    if launch is None:
        for job in pending:
            yield job, None
        return
    import datetime

    import torch.distributed as dist

    store, _, _ = next(dist.rendezvous("env://", timeout=datetime.timedelta(seconds=timeout_s)))
    store = dist.PrefixStore(QUEUE_PREFIX, store)
    while (index := store.add("next", 1) - 1) < len(pending):
        yield pending[index], store
    store.add("finished", 1)
    if launch.is_main:
        # Rank 0 reports the batch's result, so it waits for the others' jobs (they exit 0 when done: a non-zero
        # exit would make torchrun stop the processes still running).
        while store.add("finished", 0) < launch.world_size:
            time.sleep(1.0)


def _run_job(job: Job, device: str, cache: Any) -> None:
    from .generate import run_generation
    from .request import request_from_cli_args

    assert job.args is not None
    request = request_from_cli_args(job.args)
    request.show_progress = False
    if device:
        request.device = device
    run_generation(request, model_cache=cache)


def _retry_advice(failed: list[Job], jobs_path: Path) -> str:
    """What to do about the jobs not done: lines of the jobs file that are no job (not JSON, a bad flag) must be
    fixed first, since running the same command again fails them again; the others may just be retried."""
    unusable = [str(job.number) for job in failed if job.args is None]
    if not unusable:
        return "fix what their errors say, or run the same command again to retry them"
    lines = f"line{'s' if len(unusable) > 1 else ''} {', '.join(unusable)}"
    return f"fix {lines} of {jobs_path} (the errors say what is wrong), then run the same command again"


def run_batch(args: argparse.Namespace) -> int:
    from .pipeline.distributed import process_device, torchrun_launch

    jobs_path = Path(args.jobs)
    launch = torchrun_launch()
    if launch is not None:
        from .pipeline.distributed import raise_on_sigterm

        raise_on_sigterm()  # torchrun's SIGTERM then removes a half-written video on its way out
    results = Path(args.results) if args.results else jobs_path.with_suffix(".results.jsonl")
    jobs = read_jobs(jobs_path, args)
    if results.resolve() == jobs_path.resolve():
        raise InputError(f"--results {results} is the jobs file itself; give the results their own file (the "
                         f"default is {jobs_path.with_suffix('.results.jsonl')})")
    manifest = ResultsManifest(results)
    manifest.check()  # before the first job: a manifest that cannot take its record fails now, not after a job
    done = manifest.done_outputs()
    pending = [job for job in jobs if job.error is not None or str(Path(job.output).resolve()) not in done]
    name = f"rank {launch.rank}: " if launch is not None else ""
    if launch is None or launch.is_main:
        print(f"{jobs_path}: {len(jobs)} jobs, {len(jobs) - len(pending)} already done, {len(pending)} to run; "
              f"results in {results}", flush=True)
    cache = ModelCache()
    for job, _ in _claimed_jobs(pending, launch, args.dist_timeout):
        started = time.monotonic()
        error = job.error
        if error is None:
            try:
                device = process_device(job.args.device, launch) if launch is not None else ""
                _run_job(job, device, cache)
            except VExpressError as exc:
                error = one_line(exc)
            except Exception as exc:  # one job's crash (e.g. out of memory) must not end the others
                logger.debug("job on line %d failed", job.number, exc_info=True)
                error = f"{type(exc).__name__}: {one_line(exc)}"
        seconds = time.monotonic() - started
        manifest.append(job=job.number, status="failed" if error else "done", output=job.output, seconds=seconds,
                        error=error)
        verdict = f"failed after {seconds:.1f} s: {error}" if error else f"done in {seconds:.1f} s: {job.output}"
        print(f"{name}job {job.number} of {jobs_path.name} {verdict}", flush=True)
    if launch is not None and not launch.is_main:
        return 0
    done = manifest.done_outputs()
    failed = [job for job in jobs if job.error is not None or str(Path(job.output).resolve()) not in done]
    if failed:
        print(f"{len(failed)} of {len(jobs)} jobs not done (lines {', '.join(str(j.number) for j in failed)}); "
              f"see {results}; {_retry_advice(failed, jobs_path)}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_batch_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return run_batch(args)
    except VExpressError as error:
        print("error: " + one_line(error), file=sys.stderr)
        return EXIT_USER_ERROR
    except BaseException as stop:
        from .pipeline.distributed import Terminated

        if not isinstance(stop, (KeyboardInterrupt, Terminated)):
            raise
        print("stopped: the finished jobs are in the manifest; run the same command again to go on",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
