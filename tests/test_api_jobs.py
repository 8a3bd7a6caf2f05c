"""``scripts/api_example.py --jobs``: jobs spread over several (fake) ComfyUI servers, manifest, failures, resume.

Each fake server is a tiny HTTP server on 127.0.0.1 that answers like ComfyUI (upload, prompt, history, view) and
takes a little time per prompt, so that two servers really share the queue.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from tests.fake_comfy_api import ComfyApiHandler, load_api_example, serve

WORKFLOW = {"2": {"class_type": "LoadAudio", "inputs": {"audio": "x.wav"}},
            "4": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
            "7": {"class_type": "VExpressSampler", "inputs": {"steps": 20}}}


class FakeComfy:
    """One fake server: records uploads and prompts; a prompt whose audio is ``fail.wav`` ends with an error."""

    def __init__(self) -> None:
        self.uploads: list[str] = []
        self.prompts: dict[str, dict] = {}
        self.finished_at: dict[str, float] = {}
        owner = self

        class Handler(ComfyApiHandler):
            def do_POST(self):
                body = self.read_body()
                if self.path == "/upload/image":
                    name, _content = self.uploaded_file(body)
                    owner.uploads.append(name)
                    return self.reply(200, {"name": name, "subfolder": "", "type": "input"})
                if self.path == "/prompt":
                    prompt_id = uuid.uuid4().hex
                    owner.prompts[prompt_id] = json.loads(body)["prompt"]
                    owner.finished_at[prompt_id] = time.monotonic() + 0.3  # ComfyUI takes a while
                    return self.reply(200, {"prompt_id": prompt_id, "number": 0, "node_errors": {}})
                return self.reply(404, {})

            def do_GET(self):
                if self.path.startswith("/history/"):
                    prompt_id = self.path.rsplit("/", 1)[1]
                    if time.monotonic() < owner.finished_at[prompt_id]:
                        return self.reply(200, {})
                    audio = owner.prompts[prompt_id]["2"]["inputs"]["audio"]
                    if audio == "fail.wav":
                        status = {"status_str": "error", "messages": [["execution_error", {
                            "node_type": "LoadAudio", "node_id": "2", "exception_message": "cannot decode fail.wav"}]]}
                        return self.reply(200, {prompt_id: {"status": status, "outputs": {}}})
                    entry = {"status": {"status_str": "success", "messages": []},
                             "outputs": {"8": {"images": [{"filename": f"{audio}.mp4", "subfolder": "",
                                                           "type": "output"}]}}}
                    return self.reply(200, {prompt_id: entry})
                if self.path.startswith("/view?"):
                    query = urllib.parse.parse_qs(self.path.split("?", 1)[1])
                    return self.reply(200, f"video of {query['filename'][0]}".encode(), raw=True)
                return self.reply(404, {})

        self.server, self.url = serve(Handler)


@pytest.fixture
def servers():
    started = [FakeComfy(), FakeComfy()]
    yield started
    for server in started:
        server.server.shutdown()


def test_jobs_are_spread_over_servers_recorded_and_resumed(servers, tmp_path, capsys):
    api = load_api_example()
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(WORKFLOW))
    portrait = tmp_path / "me.png"
    portrait.write_bytes(b"png")
    names = ["a.wav", "b.wav", "fail.wav", "c.wav", "d.wav"]
    lines = [json.dumps({"set": {"2.audio": name}, "out": str(tmp_path / "out" / name)}) for name in names]
    lines.insert(2, "{not json")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(lines) + "\n")
    argv = [str(workflow), "--jobs", str(jobs), "--upload", str(portrait), "--set", "4.image=me.png",
            "--set", "7.steps=3", *(part for server in servers for part in ("--url", server.url))]

    assert api.main(argv) == 3  # some jobs failed
    records = [json.loads(line) for line in (tmp_path / "jobs.results.jsonl").read_text().splitlines()]
    by_job = {record["job"]: record for record in records}
    assert sorted(by_job) == [1, 2, 3, 4, 5, 6]
    assert {n: by_job[n]["status"] for n in by_job} == {1: "done", 2: "done", 3: "failed", 4: "failed", 5: "done",
                                                         6: "done"}
    assert "not JSON" in by_job[3]["error"] and "cannot decode fail.wav" in by_job[4]["error"]
    assert Path(by_job[1]["output"]).read_bytes() == b"video of a.wav.mp4"
    assert all(record["seconds"] >= 0 for record in records)
    # Both servers ran prompts, every prompt with the shared and the job's own inputs; each upload went to the
    # server that ran the job.
    prompts = [graph for server in servers for graph in server.prompts.values()]
    assert all(len(server.prompts) >= 1 for server in servers)
    assert sorted(graph["2"]["inputs"]["audio"] for graph in prompts) == sorted(names)
    assert all(graph["7"]["inputs"]["steps"] == 3 and graph["4"]["inputs"]["image"] == "me.png" for graph in prompts)
    assert sum(len(server.uploads) for server in servers) == len(names)
    out = capsys.readouterr().out
    assert out.count("job ") == 6 and "already done" in out

    # Resume: the done jobs are skipped; the failed ones run again (and fail again).
    before = sum(len(server.prompts) for server in servers)
    assert api.main(argv) == 3
    assert sum(len(server.prompts) for server in servers) == before + 1  # only fail.wav was queued again
    assert "4 already done, 2 to run" in capsys.readouterr().out


def test_an_unreachable_server_hands_its_jobs_to_the_others(servers, tmp_path):
    api = load_api_example()
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(WORKFLOW))
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"set": {"2.audio": f"{i}.wav"}}) + "\n" for i in range(3)))
    argv = [str(workflow), "--jobs", str(jobs), "--out", str(tmp_path / "out"), "--url", "http://127.0.0.1:9",
            "--url", servers[0].url, "--results", str(tmp_path / "manifest.jsonl")]
    assert api.main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert sorted((r["job"], r["status"]) for r in records) == [(1, "done"), (2, "done"), (3, "done")]
    assert len(servers[0].prompts) == 3
    assert (tmp_path / "out" / "job2" / "1.wav.mp4").is_file()
