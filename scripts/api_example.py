#!/usr/bin/env python3
"""Run a V-Express workflow on a running ComfyUI over its HTTP API and download the video (standard library only).

Usage (ComfyUI running at http://127.0.0.1:8188, the V-Express pack installed, weights in place)::

    python scripts/api_example.py "example_workflows/api/V-Express 2 - Any speech, still head (fix_face).json" \\
        --upload my_portrait.png --upload my_speech.mp3 \\
        --set 4.image=my_portrait.png --set 2.audio=my_speech.mp3 --set 6.steps=20 \\
        --out results/

What it does, step by step (every step is a plain HTTP call, see the functions below):

1. ``POST /upload/image`` for each ``--upload`` file: ComfyUI stores any file type (images, audio, kps files) in
   its ``input/`` folder; the graph then refers to it by name.
2. ``--set NODE.INPUT=VALUE`` edits the API-format graph (``{"<node id>": {"class_type", "inputs"}}``; values are
   parsed as JSON when possible, so ``6.steps=20`` is a number and ``4.image=a.png`` a string).
3. ``POST /prompt`` queues the graph; a 400 answer lists the invalid inputs per node.
4. ``GET /history/<prompt_id>`` is polled until the prompt has finished (ComfyUI answers ``{}`` before that).
5. Every file in the outputs (the MP4 of the save node: ``{"images": [{"filename", "subfolder", "type"}],
   "animated": [true]}``) is fetched with ``GET /view`` into ``--out``.

Press Ctrl+C to cancel: the script then sends ``POST /interrupt`` for its prompt. Exit codes: 0 done, 2 rejected
(invalid graph), 3 failed while running, 4 timed out or cancelled, 5 server unreachable.

**Many clips over several servers** (``--jobs``): give ``--url`` once per ComfyUI server and a jobs file, JSON Lines
with one object per clip::

    {"upload": ["ann.png", "ann.mp3"], "set": {"4.image": "ann.png", "2.audio": "ann.mp3"}, "out": "results/ann"}

(``upload``: files to put into the server's ``input/`` folder; ``set``: inputs to change, values as JSON;
``out``: folder for the downloads, default ``<--out>/job<line>``; the command line's ``--upload`` and ``--set`` apply
to every job first). Each server gets one job at a time from a shared queue (ComfyUI runs one prompt at a time),
so faster servers take more jobs; a server that cannot be reached hands its job back to the others. A results
manifest (``<jobs>.results.jsonl`` unless ``--results``; the same records as ``python -m vexpress_model.batch``:
``job`` = line number, ``status`` done/failed, ``output``, ``seconds``, ``error``) is written as jobs finish, a
failing job is recorded while the others go on, and running the same command again skips the jobs recorded as
done whose output still exists. Exit code 0 when every job is done, 3 when some failed, 2 for an unusable jobs file.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import queue as queue_module
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any


class ComfyError(Exception):
    """The server rejected the prompt, the prompt failed, or the server could not be reached."""

    def __init__(self, message: str, exit_code: int, details: Any = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.details = details


def _request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 60) -> bytes:
    method = "POST" if data is not None else "GET"
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        body = error.read()
        raise ComfyError(f"{url}: HTTP {error.code}", 2 if error.code == 400 else 3, _json_or_text(body)) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        raise ComfyError(f"cannot reach ComfyUI at {url}: {error}", 5) from None


def _json_or_text(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def get_json(base: str, path: str, timeout: float = 60) -> Any:
    return json.loads(_request(base.rstrip("/") + path, timeout=timeout))


def post_json(base: str, path: str, payload: Any, timeout: float = 60) -> Any:
    headers = {"Content-Type": "application/json"}
    body = _request(base.rstrip("/") + path, json.dumps(payload).encode(), headers, timeout)
    return _json_or_text(body) if body else None


def upload(base: str, path: str | Path, subfolder: str = "", overwrite: bool = True) -> str:
    """Upload a file into ComfyUI's input folder; returns the name to use in the graph."""
    path = Path(path)
    boundary = uuid.uuid4().hex
    fields = {"type": "input", "overwrite": "true" if overwrite else "false", "subfolder": subfolder}
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
        f"Content-Type: {mime}\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    answer = json.loads(
        _request(base.rstrip("/") + "/upload/image", b"".join(parts),
                 {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    )
    return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]


def set_input(graph: dict[str, Any], assignment: str) -> None:
    """Apply ``NODE.INPUT=VALUE`` to an API-format graph (VALUE as JSON when it parses, else a string)."""
    target, _, raw = assignment.partition("=")
    node, _, name = target.partition(".")
    if "=" not in assignment or node not in graph or not name:
        raise ComfyError(f"--set {assignment!r}: expected NODE.INPUT=VALUE with a node id of the graph", 2)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    graph[node]["inputs"][name] = value


def queue(base: str, graph: dict[str, Any], client_id: str | None = None) -> str:
    """Queue an API-format graph; returns its prompt id (raises ComfyError with the node errors on 400)."""
    answer = post_json(base, "/prompt", {"prompt": graph, "client_id": client_id or uuid.uuid4().hex})
    return answer["prompt_id"]


def wait(base: str, prompt_id: str, timeout: float = 3600, poll: float = 0.5) -> dict[str, Any]:
    """Poll ``/history/<id>`` until the prompt has finished; returns its history entry."""
    deadline = time.monotonic() + timeout
    while True:
        history = get_json(base, f"/history/{prompt_id}")
        entry = history.get(prompt_id)
        if entry:  # ComfyUI records a prompt in the history once it has finished (success, error or interrupt)
            return entry
        if time.monotonic() > deadline:
            raise ComfyError(f"prompt {prompt_id} did not finish within {timeout:.0f} s", 4)
        time.sleep(poll)


def error_of(entry: dict[str, Any]) -> str | None:
    """A readable error for a failed or interrupted prompt (None when it succeeded)."""
    status = entry.get("status", {})
    if status.get("status_str") == "success":
        return None
    for event, data in status.get("messages", []):
        if event == "execution_error":
            return f"{data.get('node_type')} (node {data.get('node_id')}): {data.get('exception_message', '').strip()}"
        if event == "execution_interrupted":
            return f"interrupted in node {data.get('node_id')} ({data.get('node_type')})"
    return f"prompt ended with status {status.get('status_str')}"


def output_files(entry: dict[str, Any]) -> list[dict[str, str]]:
    """Every file the prompt's output nodes reported (``images`` holds videos too, see ui.PreviewVideo)."""
    files = []
    for output in entry.get("outputs", {}).values():
        for key in ("images", "gifs", "audio", "videos"):
            for item in output.get(key, []) or []:
                if isinstance(item, dict) and "filename" in item:
                    files.append(item)
    return files


def download(base: str, item: dict[str, str], out_dir: str | Path) -> Path:
    """Fetch one output file with ``GET /view`` into ``out_dir`` (keeping its sub-folder)."""
    query = urllib.parse.urlencode(
        {"filename": item["filename"], "subfolder": item.get("subfolder", ""), "type": item.get("type", "output")}
    )
    target = Path(out_dir) / item.get("subfolder", "") / item["filename"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(_request(f"{base.rstrip('/')}/view?{query}", timeout=600))
    return target


def interrupt(base: str, prompt_id: str | None = None) -> None:
    """Cancel the running prompt (the UI's Cancel button); with a prompt id only if that one is running."""
    post_json(base, "/interrupt", {"prompt_id": prompt_id} if prompt_id else {})


def run(base: str, graph: dict[str, Any], out_dir: str | Path, timeout: float = 3600) -> list[Path]:
    """Queue, wait and download; returns the downloaded files (raises ComfyError on failure)."""
    prompt_id = queue(base, graph)
    try:
        entry = wait(base, prompt_id, timeout)
    except (KeyboardInterrupt, ComfyError) as error:
        try:
            interrupt(base, prompt_id)
        finally:
            if isinstance(error, KeyboardInterrupt):
                raise ComfyError(f"cancelled prompt {prompt_id}", 4) from None
        raise
    problem = error_of(entry)
    if problem:
        raise ComfyError(problem, 3, entry.get("status"))
    return [download(base, item, out_dir) for item in output_files(entry)]


# ------------------------------------------------------------------------------------ many jobs, many servers


def read_jobs(path: str | Path) -> list[tuple[int, dict[str, Any] | None, str | None]]:
    """``(line number, job, error)`` for every job line of a jobs file (blank and ``#`` lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ComfyError(f"cannot read the jobs file {path}: {exc}", 2) from None
    jobs: list[tuple[int, dict[str, Any] | None, str | None]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            job = json.loads(line)
        except ValueError as exc:
            jobs.append((number, None, f"{path}, line {number}: not JSON ({exc})"))
            continue
        unknown = set(job) - {"upload", "set", "out"} if isinstance(job, dict) else {"(not an object)"}
        if unknown:
            jobs.append((number, None, f"{path}, line {number}: unknown keys {sorted(unknown)}; use upload, set, out"))
        else:
            jobs.append((number, job, None))
    if not jobs:
        raise ComfyError(f"the jobs file {path} holds no jobs", 2)
    return jobs


class Manifest:
    """The results manifest (JSON Lines), appended as jobs finish; the records of ``vexpress_model.batch``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, job: int, status: str, output: str, seconds: float, error: str | None) -> None:
        record = {"job": job, "status": status, "output": output, "seconds": round(seconds, 3), "error": error}
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def done_jobs(self) -> set[int]:
        """Jobs recorded as done whose output still exists."""
        done = set()
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if record.get("status") == "done" and record.get("output") and Path(record["output"]).exists():
                    done.add(record["job"])
        return done


def run_job(base: str, graph: dict[str, Any], job: dict[str, Any], uploads: list[str], assignments: list[str],
            out_dir: Path, timeout: float) -> list[Path]:
    """One job on one server: its uploads, its inputs set on a copy of the graph, queue, wait, download."""
    graph = json.loads(json.dumps(graph))
    for path in [*uploads, *job.get("upload", [])]:
        upload(base, path)
    for assignment in assignments:
        set_input(graph, assignment)
    for target, value in job.get("set", {}).items():
        set_input(graph, f"{target}={json.dumps(value)}")
    return run(base, graph, out_dir, timeout)


def run_jobs(urls: list[str], graph: dict[str, Any], jobs_path: str, args: argparse.Namespace) -> int:
    """Spread the jobs over the servers (one worker thread per server, one shared queue); returns the exit code."""
    jobs = read_jobs(jobs_path)
    manifest = Manifest(args.results or Path(jobs_path).with_suffix(".results.jsonl"))
    done = manifest.done_jobs()
    pending: queue_module.Queue = queue_module.Queue()
    for item in jobs:
        if item[0] not in done:
            pending.put(item)
    print(f"{jobs_path}: {len(jobs)} jobs, {len(done & {n for n, _, _ in jobs})} already done, {pending.qsize()} "
          f"to run on {len(urls)} servers; results in {manifest.path}", flush=True)

    def record(number: int, url: str, started: float, output: str, error: str | None) -> None:
        seconds = time.monotonic() - started
        manifest.append(number, "failed" if error else "done", output, seconds, error)
        verdict = f"failed after {seconds:.1f} s: {error}" if error else f"done in {seconds:.1f} s: {output}"
        print(f"job {number} on {url}: {verdict}", flush=True)

    def worker(url: str) -> None:
        while True:
            try:
                number, job, error = pending.get_nowait()
            except queue_module.Empty:
                return
            started = time.monotonic()
            out_dir = Path(job.get("out") or Path(args.out) / f"job{number}") if job else Path(args.out)
            if error is not None or job is None:
                record(number, url, started, "", error)
                continue
            try:
                files = run_job(url, graph, job, args.upload, args.set, out_dir, args.timeout)
            except ComfyError as exc:
                if exc.exit_code == 5:  # this server is gone: its job goes back to the others
                    pending.put((number, job, None))
                    print(f"{url} cannot be reached; its jobs go to the other servers", file=sys.stderr, flush=True)
                    return
                record(number, url, started, str(out_dir), str(exc))
                continue
            record(number, url, started, str(files[0] if files else out_dir), None)

    threads = [threading.Thread(target=worker, args=(url,), daemon=True) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    while not pending.empty():  # every server was unreachable
        number, _, _ = pending.get_nowait()
        manifest.append(number, "failed", "", 0.0, "no server could be reached")
    missing = sorted({n for n, _, _ in jobs} - manifest.done_jobs())
    if missing:
        print(f"{len(missing)} of {len(jobs)} jobs not done (lines {', '.join(map(str, missing))}); see "
              f"{manifest.path}; run the same command again to retry them", file=sys.stderr)
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="an API-format workflow (e.g. example_workflows/api/*.json)")
    parser.add_argument("--url", action="append", default=[], help="ComfyUI address (default $COMFY_URL or "
                        "http://127.0.0.1:8188); give it once per server to spread --jobs over several servers")
    parser.add_argument("--upload", action="append", default=[], metavar="FILE", help="file to put into input/")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE", help="change an input")
    parser.add_argument("--out", default="output", help="folder for the downloaded files (default: ./output)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the result")
    parser.add_argument("--jobs", help="jobs file (JSON Lines) to run over all --url servers; see the docstring")
    parser.add_argument("--results", help="results manifest for --jobs (default: <jobs>.results.jsonl)")
    args = parser.parse_args(argv)
    urls = args.url or [os.environ.get("COMFY_URL", "http://127.0.0.1:8188")]

    try:
        graph = json.loads(Path(args.workflow).read_text())
        if "nodes" in graph and "links" in graph:
            raise ComfyError(
                f"{args.workflow} is a UI-format workflow; use its API-format copy (example_workflows/api/)", 2
            )
        if args.jobs:
            return run_jobs(urls, graph, args.jobs, args)
        for path in args.upload:
            print(f"uploaded {path} as {upload(urls[0], path)}")
        for assignment in args.set:
            set_input(graph, assignment)
        started = time.monotonic()
        files = run(urls[0], graph, args.out, args.timeout)
    except ComfyError as error:
        print(f"error: {error}", file=sys.stderr)
        if error.details:
            print(json.dumps(error.details, indent=2)[:4000], file=sys.stderr)
        return error.exit_code
    print(f"finished in {time.monotonic() - started:.1f} s")
    for path in files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
