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
import threading
import time
from pathlib import Path

import pytest

from tests import comfy_server

REPO = Path(__file__).resolve().parents[1]
API_DIR = REPO / "example_workflows" / "api"
FIX_FACE = API_DIR / "V-Express 2 - Any speech, still head (fix_face).json"
OTHER_PERSON = API_DIR / "V-Express 3 - Head motion of another person (offset_retarget).json"
FULL_FRAME = API_DIR / "V-Express 6 - Whole photo, face off-centre (FaceCrop, paste-back in SaveVideo).json"
SPEECH = "vexpress_speech.wav"
SHORT_SPEECH = "queue_speech.wav"  # the first 2 s of SPEECH (made by make_inputs): few frames, a cheap prompt
BIG_PHOTO = "queue_landscape_1080p.jpg"  # the landscape photo at 1920x1080 (make_inputs): a slow paste-back encode
MISSING_AUDIO = "no_such_speech.wav"
CORRUPT_AUDIO = "corrupt_speech.wav"
OUTPUT_FOLDER = "queue"
RSS_GROWTH_LIMIT = 150 * 2**20
LOADED_LINE = "V-Express: loaded "  # the loader node's log line, once per real load of the networks
SAMPLING_LINE = "sampling "  # the library's log line as the sampler starts
HOW_TO = (
    "put a ComfyUI checkout (>= 0.3.64) at ../shared/comfyui/ComfyUI beside the repository (or set COMFYUI_PATH) "
    "and run `bash scripts/test.sh`, which builds .venv-comfy and sets COMFYUI_PYTHON"
)

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]
if not os.environ.get("COMFYUI_PATH") or not os.environ.get("COMFYUI_PYTHON"):
    pytest.skip(f"no ComfyUI to test against: {HOW_TO}", allow_module_level=True)

api = comfy_server.api


def make_inputs(server, folder: Path) -> None:
    """Upload SHORT_SPEECH, BIG_PHOTO and the corrupt audio file into the server's input folder."""
    import wave

    from PIL import Image

    examples = REPO / "example_workflows" / "input"
    with wave.open(str(examples / SPEECH)) as source, wave.open(str(folder / SHORT_SPEECH), "wb") as short:
        short.setparams(source.getparams())
        short.writeframes(source.readframes(2 * source.getframerate()))
    Image.open(examples / "vexpress_landscape.jpg").resize((1920, 1080)).save(folder / BIG_PHOTO, quality=90)
    (folder / CORRUPT_AUDIO).write_bytes(b"not really a recording\n" * 100)
    for name in (SHORT_SPEECH, BIG_PHOTO, CORRUPT_AUDIO):
        assert api.upload(server.url, folder / name) == name


def make_graph(workflow: Path, name: str, *, seed: int, size: tuple[int, int] = (64, 64), fps: float = 6.0,
               strategy: str | None = None, audio: str = SHORT_SPEECH, steps: int = 2, max_side: int = 0,
               photo: str | None = None) -> dict:
    """An example workflow made small for the tiny model, saving to ``output/queue/<name>_NNNNN_.mp4``."""
    graph = json.loads(workflow.read_text())
    width, height = size
    settings = {
        "LoadVExpressModels": {"model": "tiny"},
        "LoadAudio": {"audio": audio},
        "LoadImage": {"image": photo} if photo else {},
        "VExpressAudioEmbed": {"fps": fps},
        "VExpressLoadKps": {"fps_if_unknown": fps},
        "VExpressRetargetKps": {"width": width, "height": height, **({"strategy": strategy} if strategy else {})},
        "VExpressFaceCrop": {"width": width, "height": height},
        "VExpressSampler": {"width": width, "height": height, "steps": steps, "seed": seed, "context_frames": 8,
                            "context_overlap": 2},
        "VExpressSaveVideo": {"filename_prefix": f"{OUTPUT_FOLDER}/{name}", "max_side": max_side},
    }
    for node in graph.values():
        node["inputs"].update(settings.get(node["class_type"], {}))
    return graph


def audio_frames(audio: Path, fps: float) -> int:
    """Frames a clip of this audio gets at ``fps``: its duration times fps, rounded half up (SPEC.md)."""
    import math

    import av

    with av.open(str(audio)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return max(1, math.floor(samples / stream.rate * fps + 0.5))


def decoded_video(path: Path) -> tuple[int, tuple[int, int]]:
    """(frames, (width, height)) of a video, every frame decoded."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, (stream.codec_context.width, stream.codec_context.height)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def partial_files(folder: Path) -> list[Path]:
    """Hidden files (a writer's partial file, or any other) anywhere under ``folder``."""
    return sorted(p for p in folder.rglob(".*") if p.is_file()) if folder.exists() else []


# ------------------------------------------------------------------------------------------------- the queue


VALID = [  # name, workflow, settings
    ("fix_a", FIX_FACE, {"seed": 1}),
    ("fix_b", FIX_FACE, {"seed": 2, "size": (64, 72)}),
    ("fix_c", FIX_FACE, {"seed": 3, "size": (72, 64), "fps": 8.0}),
    ("offset_a", OTHER_PERSON, {"seed": 4}),
    ("offset_b", OTHER_PERSON, {"seed": 5, "size": (64, 80), "fps": 5.0}),
    ("naive", OTHER_PERSON, {"seed": 6, "strategy": "naive_retarget"}),
    ("none", OTHER_PERSON, {"seed": 7, "strategy": "no_retarget", "fps": 4.0}),
    ("fix_d", FIX_FACE, {"seed": 8, "size": (80, 64), "audio": SPEECH, "fps": 3.0}),
    ("whole", FULL_FRAME, {"seed": 9, "max_side": 320}),
    ("fix_e", FIX_FACE, {"seed": 10, "fps": 4.0}),
]
# Cancelled while running: one in the sampler (a long run), one while SaveVideo encodes (a slow 1080p paste-back:
# it checks for Cancel between its chunks of 16 frames, so the clip has two).
CANCEL_SAMPLING = ("cancel_sampling", FIX_FACE, {"seed": 11, "steps": 200})
CANCEL_ENCODING = ("cancel_encoding", FULL_FRAME, {"seed": 12, "photo": BIG_PHOTO, "audio": SPEECH, "fps": 6.0})
INVALID = [
    ("missing_audio", FIX_FACE, {"seed": 13, "audio": MISSING_AUDIO}),
    ("corrupt_audio", FIX_FACE, {"seed": 14, "audio": CORRUPT_AUDIO}),
]


class Submitted:
    """What queueing one prompt gave: its prompt id, or the error ComfyUI answered."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.prompt_id: str | None = None
        self.rejection: api.ComfyError | None = None


def submit_from_two_clients(url: str, prompts: list[tuple[str, Path, dict]]) -> dict[str, Submitted]:
    """Queue the prompts from two clients at once (alternating), each client in its own thread."""
    results = {name: Submitted(name) for name, _, _ in prompts}
    start = threading.Barrier(2)

    def client(client_id: str, mine: list[tuple[str, Path, dict]]) -> None:
        start.wait()
        for name, workflow, settings in mine:
            try:
                results[name].prompt_id = api.queue(url, make_graph(workflow, name, **settings), client_id)
            except api.ComfyError as error:
                results[name].rejection = error

    threads = [threading.Thread(target=client, args=(f"queue-client-{i}", prompts[i::2])) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class QueueWatcher:
    """Follows the queue until every prompt has finished: cancels the two targets while they run (the sampling one
    once its sampler has started, the encoding one once its partial file appears) and records the server's RSS as
    each prompt finishes."""

    def __init__(self, server, ids: dict[str, str], cancel_sampling: str, cancel_encoding: str,
                 sampling_lines_before: int) -> None:
        self.server = server
        self.ids = ids
        self.targets = {cancel_sampling: self._sampling_started, cancel_encoding: self._encoding_started}
        # Sampler starts logged before the sampling target ran (counted while it was still pending).
        self.sampling_target = cancel_sampling
        self.sampling_lines_before = sampling_lines_before
        self.cancelled: set[str] = set()
        self.finished: list[tuple[str, float, int]] = []  # name, seconds since start, RSS bytes

    def _sampling_started(self, name: str) -> bool:
        return self.server.log_text().count(SAMPLING_LINE) > self.sampling_lines_before

    def _encoding_started(self, name: str) -> bool:
        return any(p.name.startswith(f".{name}_") for p in partial_files(self.server.base / "output"))

    def run(self, timeout: float) -> None:
        started = time.monotonic()
        names = {prompt_id: name for name, prompt_id in self.ids.items()}
        while len(self.finished) < len(self.ids):
            assert time.monotonic() - started < timeout, f"queue not done after {timeout} s: {self.finished}"
            assert self.server.process.poll() is None, self.server.log_text()[-4000:]
            lines = self.server.log_text().count(SAMPLING_LINE)  # read before the queue: prompts only move on
            state = api.get_json(self.server.url, "/queue")
            running = [names.get(item[1]) for item in state["queue_running"]]
            if self.sampling_target in [names.get(item[1]) for item in state["queue_pending"]]:
                self.sampling_lines_before = lines
            for name, started_check in self.targets.items():
                if name in running and name not in self.cancelled and started_check(name):
                    api.interrupt(self.server.url, self.ids[name])
                    self.cancelled.add(name)
            history = api.get_json(self.server.url, "/history")
            done = {n for n, _, _ in self.finished}
            for prompt_id, name in names.items():
                if name not in done and prompt_id in history:
                    self.finished.append((name, time.monotonic() - started, rss_bytes(self.server.process.pid)))
            time.sleep(0.05 if set(self.targets) & set(running) else 0.25)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    with comfy_server.running_server(tmp_path_factory.mktemp("comfyui_queue"), tiny_model_dir, HOW_TO) as running:
        yield running


def test_a_queue_of_mixed_prompts_from_two_clients(server, tmp_path):
    make_inputs(server, tmp_path)
    # The cancel targets and the failures among the valid prompts (each client queues every other one).
    prompts = [*VALID[:3], CANCEL_SAMPLING, *VALID[3:5], INVALID[0], VALID[5], INVALID[1], CANCEL_ENCODING,
               *VALID[6:]]
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
    watcher.run(timeout=600)
    print("\n".join(f"{name:16} done at {t:6.1f} s, server RSS {rss / 2**20:7.1f} MiB"
                    for name, t, rss in watcher.finished))
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
    after_fourth, after_last = watcher.finished[3][2], rss_bytes(server.process.pid)
    assert after_last - after_fourth < RSS_GROWTH_LIMIT, (after_fourth / 2**20, after_last / 2**20)

    # The networks were loaded once for the whole queue (the loader node ran once, from then on its output came
    # from ComfyUI's cache), and again after POST /free.
    assert server.log_text().count(LOADED_LINE) == 1
    api.post_json(server.url, "/free", {"unload_models": True, "free_memory": True})
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
        api.queue(server.url, make_graph(FULL_FRAME, "killed", seed=22, photo=BIG_PHOTO, audio=SPEECH))
        wait_for(lambda: partial_files(base / "output"), "partial file", server)
        server.process.kill()
        server.process.wait(30)
    left = partial_files(base / "output")
    assert [p.parent for p in left] == [output] and left[0].name.startswith(".killed_"), left  # SIGKILL: no cleanup

    with comfy_server.running_server(base, tiny_model_dir, HOW_TO, restart=True) as server:
        _, files = server.run(make_graph(FIX_FACE, "killed", seed=23))
        assert decoded_video(files[0])[0] == audio_frames(base / "input" / SHORT_SPEECH, 6.0)
        assert "partial file(s) left by an interrupted server" in server.log_text()
    assert partial_files(base / "output") == []
    assert sorted(p.name for p in output.iterdir()) == ["killed_00001_.mp4"]
