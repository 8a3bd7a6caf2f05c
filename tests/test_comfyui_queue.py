"""A real ComfyUI server working through a queue of mixed prompts, and killed while it works (issue 20).

The queue: 14 prompts sent at once by two clients (two ``client_id`` s, one thread each): 10 valid ones (different
seeds, sizes, frame rates, retarget strategies, one whole-photo paste-back), one naming an audio file that does
not exist, one naming a corrupt audio file, and two cancelled while they run (one while sampling, one while its
video is being encoded). The server must deliver every valid video, end the invalid ones with a one-line error
naming the file, leave nothing of the cancelled ones in ``output/``, keep its memory flat and load the pack's
networks once (and again after ``POST /free``).

The faults: a server killed (SIGKILL) while sampling, then one killed while encoding, each restarted on the same
base folder; the next prompt must run and leave no hidden partial file behind.

Needs ``COMFYUI_PATH`` and ``COMFYUI_PYTHON`` like ``tests/test_comfyui_integration.py``; the server itself:
``tests/comfy_server.py``. Everything runs on the tiny random-weight model at 64x64 with 2 steps.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests import comfy_server
from tests.comfy_queue import (
    BIG_PHOTO,
    CANCEL_ENCODING,
    CANCEL_SAMPLING,
    CORRUPT_AUDIO,
    FIX_FACE,
    FULL_FRAME,
    LOADED_LINE,
    MISSING_AUDIO,
    OUTPUT_FOLDER,
    RSS_GROWTH_LIMIT,
    SAMPLING_LINE,
    SHORT_SPEECH,
    VALID,
    QueueWatcher,
    audio_frames,
    decoded_video,
    free_and_settle,
    make_graph,
    make_inputs,
    mixed_queue,
    partial_files,
    rss_bytes,
    submit_from_two_clients,
)

HOW_TO = (
    "put a ComfyUI checkout (>= 0.3.64) at ../shared/comfyui/ComfyUI beside the repository (or set COMFYUI_PATH) "
    "and run `bash scripts/test.sh`, which builds .venv-comfy and sets COMFYUI_PYTHON"
)

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]
if not os.environ.get("COMFYUI_PATH") or not os.environ.get("COMFYUI_PYTHON"):
    pytest.skip(f"no ComfyUI to test against: {HOW_TO}", allow_module_level=True)

api = comfy_server.api


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    with comfy_server.running_server(tmp_path_factory.mktemp("comfyui_queue"), tiny_model_dir, HOW_TO) as running:
        yield running


def test_a_queue_of_mixed_prompts_from_two_clients(server, tmp_path):
    make_inputs(server, tmp_path)
    prompts = mixed_queue()
    assert len(prompts) == 14
    sampling_lines_before = server.log_text().count(SAMPLING_LINE)
    submitted = submit_from_two_clients(server.url, prompts)

    # The missing file is refused when queued: a node error naming it, no traceback.
    missing = submitted["missing_audio"]
    assert missing.prompt_id is None and missing.rejection is not None
    details = json.dumps(missing.rejection.details)
    assert MISSING_AUDIO in details and "Traceback" not in details, details

    ids = {name: s.prompt_id for name, s in submitted.items() if s.prompt_id}
    assert len(ids) == 13, {name: str(s.rejection) for name, s in submitted.items() if s.rejection}
    watcher = QueueWatcher(server, ids, CANCEL_SAMPLING[0], CANCEL_ENCODING[0], sampling_lines_before)
    finished = watcher.run(timeout=900)
    print("\n".join(f"{f.name:16} {f.outcome:11} {f.seconds:6.1f} s, server RSS {f.rss / 2**20:7.1f} MiB, "
                    f"loads {f.loads}" for f in finished))
    entries = {name: api.get_json(server.url, f"/history/{prompt_id}")[prompt_id] for name, prompt_id in ids.items()}

    for name, _, settings in VALID:
        entry = entries[name]
        assert api.error_of(entry) is None, f"{name}: {api.error_of(entry)}\n{server.log_text()[-3000:]}"
        [item] = api.output_files(entry)
        frames, size = decoded_video(api.download(server.url, item, tmp_path / "downloads"))
        audio = server.base / "input" / settings.get("audio", SHORT_SPEECH)
        assert frames == audio_frames(audio, settings.get("fps", 6.0)), name
        if "max_side" in settings:  # the whole photo, its longer side scaled to max_side
            assert max(size) == settings["max_side"], (name, size)
        else:
            assert size == settings.get("size", (64, 64)), (name, size)

    events = dict(entries["corrupt_audio"]["status"]["messages"])
    error = events["execution_error"]
    assert error["node_type"] == "LoadAudio" and CORRUPT_AUDIO in error["exception_message"], error
    assert "Traceback" not in error["exception_message"] and "\n" not in error["exception_message"].strip()

    output = server.base / "output"
    for name, _, _ in (CANCEL_SAMPLING, CANCEL_ENCODING):
        events = dict(entries[name]["status"]["messages"])
        assert "execution_interrupted" in events, (name, list(events))
        assert not list(output.rglob(f"*{name}*")), f"{name} left {list(output.rglob(f'*{name}*'))}"
    assert dict(entries[CANCEL_SAMPLING[0]]["status"]["messages"])["execution_interrupted"]["node_type"] == \
        "VExpressSampler"
    assert dict(entries[CANCEL_ENCODING[0]]["status"]["messages"])["execution_interrupted"]["node_type"] == \
        "VExpressSaveVideo"
    assert partial_files(output) == []

    # The server is up and idle; its memory after the last prompt is within the limit of that after the 4th.
    assert server.process.poll() is None
    queue_state = api.get_json(server.url, "/queue")
    assert queue_state["queue_running"] == [] and queue_state["queue_pending"] == []
    after_fourth, after_last = finished[3].rss, rss_bytes(server.process.pid)
    assert after_last - after_fourth < RSS_GROWTH_LIMIT, (after_fourth / 2**20, after_last / 2**20)

    # The networks were loaded once for the whole queue (the loader node ran once, from then on its output came
    # from ComfyUI's cache), and again after POST /free.
    assert server.log_text().count(LOADED_LINE) == 1
    free_and_settle(server)
    server.run(make_graph(FIX_FACE, "after_free", seed=99))
    assert server.log_text().count(LOADED_LINE) == 2


# ------------------------------------------------------------------------------------------------ the faults


def wait_for(condition, what: str, server, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert server.process.poll() is None, f"the server died before {what}:\n{server.log_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def test_server_killed_while_sampling_and_while_encoding_then_restarted(tmp_path, tiny_model_dir):
    base = tmp_path / "comfyui"
    output = base / "output" / OUTPUT_FOLDER

    with comfy_server.running_server(base, tiny_model_dir, HOW_TO) as server:
        make_inputs(server, tmp_path)
        api.queue(server.url, make_graph(FIX_FACE, "killed", seed=21, steps=200))
        wait_for(lambda: SAMPLING_LINE in server.log_text(), "sampling", server)
        server.process.kill()
        server.process.wait(30)
    assert partial_files(base / "output") == [] and not list(base.glob("output/**/*.mp4"))

    with comfy_server.running_server(base, tiny_model_dir, HOW_TO, restart=True) as server:
        api.queue(server.url, make_graph(FULL_FRAME, "killed", seed=22, photo=BIG_PHOTO, fps=12.0))
        wait_for(lambda: partial_files(base / "output"), "partial file", server)
        server.process.kill()
        server.process.wait(30)
    left = partial_files(base / "output")
    assert [p.parent for p in left] == [output] and left[0].name.startswith(".killed_"), left  # SIGKILL: no cleanup

    with comfy_server.running_server(base, tiny_model_dir, HOW_TO, restart=True) as server:
        _, files = server.run(make_graph(FIX_FACE, "killed", seed=23))
        assert decoded_video(files[0])[0] == audio_frames(base / "input" / SHORT_SPEECH, 6.0)
        # Removed and said so: by the writer of the same name (files.remove_stale_partials, the killed process is
        # gone) or by SaveVideo's sweep of its prefix (nodes/video.py), whichever reaches it first.
        assert any("removed" in line and left[0].name in line for line in server.log_text().splitlines())
    assert partial_files(base / "output") == []
    assert sorted(p.name for p in output.iterdir()) == ["killed_00001_.mp4"]
