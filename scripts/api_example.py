#!/usr/bin/env python3
"""Run a V-Express workflow on a running ComfyUI over its HTTP API and download the video (standard library only).

Usage (ComfyUI running at http://127.0.0.1:8188, the V-Express pack installed, weights in place)::

    python scripts/api_example.py example_workflows/api/vexpress_any_audio_fix_face.json \\
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
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", help="an API-format workflow (e.g. example_workflows/api/*.json)")
    parser.add_argument("--url", default=os.environ.get("COMFY_URL", "http://127.0.0.1:8188"), help="ComfyUI address")
    parser.add_argument("--upload", action="append", default=[], metavar="FILE", help="file to put into input/")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE", help="change an input")
    parser.add_argument("--out", default="output", help="folder for the downloaded files (default: ./output)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the result")
    args = parser.parse_args(argv)

    try:
        graph = json.loads(Path(args.workflow).read_text())
        if "nodes" in graph and "links" in graph:
            raise ComfyError(
                f"{args.workflow} is a UI-format workflow; use its API-format copy (example_workflows/api/)", 2
            )
        for path in args.upload:
            print(f"uploaded {path} as {upload(args.url, path)}")
        for assignment in args.set:
            set_input(graph, assignment)
        started = time.monotonic()
        files = run(args.url, graph, args.out, args.timeout)
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
