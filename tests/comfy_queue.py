"""The mixed queue of prompts that tests/test_comfyui_queue.py and benchmarks/bench_comfyui_queue.py send to a real
ComfyUI server (``tests/comfy_server.py``): the inputs they upload, the graphs (example workflows made small for
the tiny random-weight model), two clients queueing at once, and a watcher that cancels two prompts while they run
and records, as each prompt finishes, its time, the server's RSS and how often the networks were loaded.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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
REQUESTED_LINE = "Requested to load VExpress_"  # ComfyUI's line when it moves one of our networks to its device
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
        assert api.upload(server.url, folder / name) == name, name


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


VALID = [  # name, workflow, settings: 4 to 12 frames of the 2 s clip (one of 15 from the whole speech)
    ("fix_a", FIX_FACE, {"seed": 1}),
    ("fix_b", FIX_FACE, {"seed": 2, "size": (64, 72), "fps": 4.0}),
    ("fix_c", FIX_FACE, {"seed": 3, "size": (72, 64), "fps": 5.0}),
    ("offset_a", OTHER_PERSON, {"seed": 4, "fps": 4.0}),
    ("offset_b", OTHER_PERSON, {"seed": 5, "size": (64, 80), "fps": 3.0}),
    ("naive", OTHER_PERSON, {"seed": 6, "strategy": "naive_retarget", "fps": 4.0}),
    ("none", OTHER_PERSON, {"seed": 7, "strategy": "no_retarget", "fps": 5.0}),
    ("fix_d", FIX_FACE, {"seed": 8, "size": (80, 64), "audio": SPEECH, "fps": 3.0}),
    ("whole", FULL_FRAME, {"seed": 9, "max_side": 320, "fps": 4.0}),
    ("fix_e", FIX_FACE, {"seed": 10, "fps": 2.0}),
]
# Cancelled while running: one in the sampler (a long run), one while SaveVideo encodes (a slow 1080p paste-back:
# SaveVideo checks for Cancel between chunks of 16 frames, so the clip has two: 24 frames).
CANCEL_SAMPLING = ("cancel_sampling", FIX_FACE, {"seed": 11, "steps": 200, "fps": 4.0})
CANCEL_ENCODING = ("cancel_encoding", FULL_FRAME, {"seed": 12, "photo": BIG_PHOTO, "fps": 12.0})
INVALID = [
    ("missing_audio", FIX_FACE, {"seed": 13, "audio": MISSING_AUDIO}),
    ("corrupt_audio", FIX_FACE, {"seed": 14, "audio": CORRUPT_AUDIO}),
]


def mixed_queue() -> list[tuple[str, Path, dict]]:
    """The 14 prompts in the order they are queued: the cancel targets and the failures among the valid ones."""
    return [*VALID[:3], CANCEL_SAMPLING, *VALID[3:5], INVALID[0], VALID[5], INVALID[1], CANCEL_ENCODING,
            *VALID[6:]]


@dataclass
class Submitted:
    """What queueing one prompt gave: its prompt id, or the error ComfyUI answered."""

    name: str
    prompt_id: str | None = None
    rejection: api.ComfyError | None = None


def submit_from_two_clients(url: str, prompts: list[tuple[str, Path, dict]]) -> dict[str, Submitted]:
    """Queue the prompts from two clients at once, each in its own thread (one takes the even positions, the other
    the odd ones), as two users of one server would."""
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


@dataclass
class Finished:
    """One prompt as the watcher saw it finish."""

    name: str
    outcome: str  # success, error or interrupted
    seconds: float  # from execution_start to its end, by the server's own timestamps
    rss: int  # the server's resident memory right after, bytes
    loads: int  # the pack's loader lines in the log so far (real loads of the networks)
    requested: int  # ComfyUI's "Requested to load" lines so far (networks moved into its loaded list)


def outcome_of(entry: dict) -> tuple[str, float]:
    """(success, error or interrupted; seconds from execution_start to the end) of a finished prompt."""
    messages = dict(entry["status"]["messages"])
    outcome = next((e for e in ("execution_error", "execution_interrupted") if e in messages), "execution_success")
    end = max(data.get("timestamp", 0) for data in messages.values())
    return outcome.removeprefix("execution_"), (end - messages["execution_start"]["timestamp"]) / 1000


class QueueWatcher:
    """Follows the queue until every prompt has finished: cancels the two targets while they run (the sampling one
    once its sampler has started, the encoding one once its partial file appears) and records a :class:`Finished`
    for each prompt as it finishes."""

    def __init__(self, server, ids: dict[str, str], cancel_sampling: str, cancel_encoding: str,
                 sampling_lines_before: int) -> None:
        self.server = server
        self.ids = ids
        self.targets = {cancel_sampling: self._sampling_started, cancel_encoding: self._encoding_started}
        # Sampler starts logged before the sampling target ran (counted while it was still pending).
        self.sampling_target = cancel_sampling
        self.sampling_lines_before = sampling_lines_before
        self.cancelled: set[str] = set()
        self.finished: list[Finished] = []

    def _sampling_started(self, name: str) -> bool:
        return self.server.log_text().count(SAMPLING_LINE) > self.sampling_lines_before

    def _encoding_started(self, name: str) -> bool:
        return any(p.name.startswith(f".{name}_") for p in partial_files(self.server.base / "output"))

    def run(self, timeout: float) -> list[Finished]:
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
            self._record(api.get_json(self.server.url, "/history"), names)
            time.sleep(0.05 if set(self.targets) & set(running) else 0.25)
        return self.finished

    def _record(self, history: dict, names: dict[str, str]) -> None:
        done = {f.name for f in self.finished}
        for prompt_id, name in names.items():
            if name not in done and prompt_id in history:
                rss = rss_bytes(self.server.process.pid)
                log = self.server.log_text()
                outcome, seconds = outcome_of(history[prompt_id])
                self.finished.append(Finished(name, outcome, seconds, rss, log.count(LOADED_LINE),
                                              log.count(REQUESTED_LINE)))


def free_and_settle(server) -> None:
    """``POST /free`` (unload the models and drop ComfyUI's cache), then one core-only prompt: ComfyUI reads these
    flags only between prompts (or while idle), so a prompt queued right after the request could still run on the
    old cache; after this one they have surely been applied."""
    api.post_json(server.url, "/free", {"unload_models": True, "free_memory": True})
    server.run({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
