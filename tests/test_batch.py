"""``python -m vexpress_model.batch``: a bad job among good ones, the manifest, resume, networks loaded once, and
jobs spread over torchrun processes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

import vexpress_model.models as models_module
from tests.torchrun import torchrun
from vexpress_model.batch import build_batch_parser, job_namespace, main
from vexpress_model.errors import InputError


def _defaults(model_dir: Path) -> list[str]:
    return ["--model_dir", str(model_dir), "--retarget_strategy", "fix_face", "--num_inference_steps", "1",
            "--fps", "10", "--context_frames", "8", "--context_overlap", "2", "--image_width", "64",
            "--image_height", "64", "--device", "cpu", "--no_download"]


def _write_jobs(path: Path, jobs: list[dict | str]) -> Path:
    path.write_text("".join((job if isinstance(job, str) else json.dumps(job)) + "\n" for job in jobs))
    return path


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_job_flags_are_the_command_lines(tmp_path: Path) -> None:
    defaults = build_batch_parser().parse_args(["jobs.jsonl", "--seed", "7", "--quiet"])
    args = job_namespace(defaults, {"reference_image_path": "a.png", "audio_path": "a.wav", "output_path": "a.mp4",
                                    "num_inference_steps": 3, "compat": "original", "quiet": False})
    assert (args.seed, args.num_inference_steps, args.compat, args.quiet) == (7, 3, "original", False)
    assert isinstance(args, argparse.Namespace) and args.output_path == "a.mp4"
    with pytest.raises(InputError, match="compat"):
        job_namespace(defaults, {"reference_image_path": "a", "audio_path": "b", "compat": "newest"})
    with pytest.raises(InputError, match="unknown key 'sed'"):
        job_namespace(defaults, {"reference_image_path": "a", "audio_path": "b", "sed": 1})
    with pytest.raises(InputError, match="audio_path"):
        job_namespace(defaults, {"reference_image_path": "a"})
    with pytest.raises(InputError, match="on/off"):
        job_namespace(defaults, {"reference_image_path": "a", "audio_path": "b", "quiet": "yes"})


def test_batch_records_failures_goes_on_loads_once_and_resumes(
    tiny_model_with_detector: Path, media_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    loads = []
    load = models_module.load_vexpress_models
    monkeypatch.setattr(models_module, "load_vexpress_models", lambda *a, **k: loads.append(1) or load(*a, **k))
    out = tmp_path / "out"
    portrait, speech = str(media_dir / "portrait.png"), str(media_dir / "speech_short.wav")
    jobs = _write_jobs(tmp_path / "jobs.jsonl", [
        {"reference_image_path": portrait, "audio_path": speech, "output_path": str(out / "one.mp4")},
        {"reference_image_path": portrait, "audio_path": str(media_dir / "nope.wav"),
         "output_path": str(out / "b.mp4")},
        "# a comment line",
        {"reference_image_path": portrait, "audio_path": speech, "output_path": str(out / "two.mp4"), "seed": 3},
        {"reference_image_path": portrait, "audio_path": speech, "output_path": str(out / "one.mp4")},
    ])
    argv = [str(jobs), *_defaults(tiny_model_with_detector)]

    assert main(argv) == 1
    records = _records(tmp_path / "jobs.results.jsonl")
    assert [(r["job"], r["status"]) for r in records] == [(1, "done"), (2, "failed"), (4, "done"), (5, "failed")]
    assert records[0]["output"] == str(out / "one.mp4") and records[0]["error"] is None
    assert records[0]["seconds"] > 0
    assert "nope.wav" in records[1]["error"] and "does not exist" in records[1]["error"]
    assert "line 5" in records[3]["error"] and "also the output of the job on line 1" in records[3]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["one.mp4", "two.mp4"]
    assert len(loads) == 1  # the networks were loaded once for both good jobs
    captured = capsys.readouterr()
    progress = [line for line in captured.out.splitlines() if line.startswith("job ")]
    assert len(progress) == 4 and "done in" in progress[0] and "failed after" in progress[1]
    assert "2 of 4 jobs not done (lines 2, 5)" in captured.err

    # Resume: the two done jobs are skipped (their videos stay as they are); the failed ones are tried again.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(argv) == 1
    assert "2 already done, 2 to run" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert len(loads) == 1
    assert [(r["job"], r["status"]) for r in _records(tmp_path / "jobs.results.jsonl")][4:] == [(2, "failed"),
                                                                                               (5, "failed")]


def test_unusable_jobs_file_exits_2(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read the jobs file")
    assert main([str(_write_jobs(tmp_path / "empty.jsonl", ["# nothing"]))]) == 2


def test_batch_under_torchrun_spreads_jobs_over_processes(tiny_model_with_detector: Path, media_dir: Path,
                                                          tmp_path: Path) -> None:
    portrait, speech = str(media_dir / "portrait.png"), str(media_dir / "speech_short.wav")
    jobs = _write_jobs(tmp_path / "jobs.jsonl", [
        {"reference_image_path": portrait, "audio_path": speech, "output_path": f"out/{name}.mp4"}
        for name in ("a", "b", "c")
    ])
    result = torchrun(2, ["-m", "vexpress_model.batch", str(jobs), *_defaults(tiny_model_with_detector),
                          "--results", "manifest.jsonl"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    records = _records(tmp_path / "manifest.jsonl")
    assert sorted((r["job"], r["status"]) for r in records) == [(1, "done"), (2, "done"), (3, "done")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]
    progress = [line for line in result.stdout.splitlines() if " of jobs.jsonl done in " in line]
    assert len(progress) == 3 and all(line.startswith(("rank 0: ", "rank 1: ")) for line in progress)


def _one_bad_line(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_a_results_file_that_cannot_take_records_is_refused_before_any_job(
    tiny_model_with_detector: Path, media_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import os

    loads = []
    monkeypatch.setattr(models_module, "load_vexpress_models", lambda *a, **k: loads.append(1))
    out = tmp_path / "out"
    jobs = _write_jobs(tmp_path / "jobs.jsonl", [
        {"reference_image_path": str(media_dir / "portrait.png"), "audio_path": str(media_dir / "speech_short.wav"),
         "output_path": str(out / "a.mp4")}])
    jobs_text = jobs.read_bytes()
    (tmp_path / "a_folder").mkdir()
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(bytes(range(256)) * 4)  # random bytes: not UTF-8
    # File modes do not stop root (as CI runs): root gets sysfs, where the kernel lets nobody create a file.
    read_only = Path("/sys") / "results.jsonl"
    if os.geteuid() != 0:
        (tmp_path / "read_only").mkdir(mode=0o500)
        read_only = tmp_path / "read_only" / "results.jsonl"
    cases = [
        (jobs, f"error: --results {jobs} is the jobs file itself; give the results their own file (the default is "
               f"{tmp_path / 'jobs.results.jsonl'})"),
        (tmp_path / "a_folder", f"error: the results manifest (--results) {tmp_path / 'a_folder'} is a folder; "
                                "give a file name"),
        (garbage, f"error: the results manifest {garbage} is not a results file (not UTF-8 text); give another "
                  "--results path, or move that file away"),
        (read_only, f"error: cannot write the results manifest (--results) {read_only} ("),
    ]
    for results, says in cases:
        message = _one_bad_line([str(jobs), *_defaults(tiny_model_with_detector), "--results", str(results)], capsys)
        assert message.startswith(says), message
    assert loads == [] and not out.exists()  # no job ran
    assert jobs.read_bytes() == jobs_text and garbage.read_bytes() == bytes(range(256)) * 4
    assert not (tmp_path / "jobs.results.jsonl").exists()


def test_a_byte_order_mark_is_fine_and_the_advice_fits_the_failure(tmp_path: Path, capsys) -> None:
    """A jobs file saved by Windows Notepad (UTF-8 with a byte-order mark): its first line is a job. A line that is
    not a job must be fixed; running the same command again would not help it."""
    jobs = tmp_path / "jobs.jsonl"
    first = {"reference_image_path": str(tmp_path / "missing.png"), "audio_path": "a.wav", "output_path": "a.mp4"}
    jobs.write_bytes(b"\xef\xbb\xbf" + (json.dumps(first) + "\n{not json\n").encode("utf-8"))
    assert main([str(jobs), "--no_download"]) == 1
    records = _records(tmp_path / "jobs.results.jsonl")
    assert [(r["job"], r["status"]) for r in records] == [(1, "failed"), (2, "failed")]
    assert "missing.png does not exist" in records[0]["error"] and "not JSON" in records[1]["error"]
    assert capsys.readouterr().err.strip().splitlines() == [
        f"2 of 2 jobs not done (lines 1, 2); see {tmp_path / 'jobs.results.jsonl'}; fix line 2 of {jobs} (the "
        "errors say what is wrong), then run the same command again"]

    jobs.write_bytes(b"\xef\xbb\xbf" + (json.dumps(first) + "\n").encode("utf-8"))
    assert main([str(jobs), "--no_download"]) == 1
    assert capsys.readouterr().err.strip().endswith(
        "; fix what their errors say, or run the same command again to retry them")
