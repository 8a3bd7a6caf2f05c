"""What a first-time user reads: flag errors in one line, defaults in --help, out-of-range flags refused before any
work, the check_model and download commands (found by trying the README's commands as a new user would)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from vexpress_model import check_model, cli, download


def _error_of(run, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        run(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--fps", "abc", "error: argument --fps: invalid float value: 'abc'"),
    ("--crf", "99", "error: argument --crf: must be between 0 and 51 (H.264 quality), got 99"),
    ("--crf", "-1", "error: argument --crf: must be between 0 and 51 (H.264 quality), got -1"),
    ("--window_batch_size", "-1", "error: argument --window_batch_size: must be at least 0, got -1"),
    ("--max_side", "-5", "error: argument --max_side: must be at least 0, got -5"),
    ("--max_side", "10", "error: argument --max_side: must be 0 (keep the photo's size) or at least 64 pixels, got "
                         "10"),
    ("--standard_audio_sampling_rate", "8000",
     "error: argument --standard_audio_sampling_rate: must be 16000, got 8000: wav2vec2-base-960h"),
    ("--standard_audio_sampling_rate", "0",
     "error: argument --standard_audio_sampling_rate: must be 16000, got 0: wav2vec2-base-960h"),
    ("--gpu_id", "-1", "error: argument --gpu_id: must be at least 0, got -1"),
    ("--dist_timeout", "nan", "error: argument --dist_timeout: must be a number of seconds above 0, got nan"),
    ("--retarget_strategy", "foo", "error: argument --retarget_strategy: invalid choice: 'foo'"),
])
def test_a_bad_flag_is_one_line_before_any_work(flag, value, says, capsys, tmp_path):
    err = _error_of(cli.main, ["--reference_image_path", "x.png", "--audio_path", "x.wav", flag, value], capsys)
    assert err.startswith(says), err
    assert err.endswith("; `python -m vexpress_model --help` lists the flags\n")
    assert err.count("\n") == 1 and "usage:" not in err


def test_missing_required_flags_is_one_line(capsys):
    err = _error_of(cli.main, [], capsys)
    assert err == ("error: the following arguments are required: --reference_image_path, --audio_path; "
                   "`python -m vexpress_model --help` lists the flags\n")


def test_help_shows_the_defaults():
    text = " ".join(cli.build_parser().format_help().split())
    for shown in ("--retarget_strategy {fix_face,no_retarget,offset_retarget,naive_retarget} (default: no_retarget)",
                  "--fps FPS (default: 30.0)", "--num_inference_steps NUM_INFERENCE_STEPS (default: 25)",
                  "--guidance_scale GUIDANCE_SCALE (default: 3.5)", "--seed SEED (default: 42)",
                  "the .mp4 to write (default: ./output/vexpress.mp4)",
                  "(lower is better; 17 is near lossless) (default: 17)"):
        assert shown in text
    # A default the help already states is not repeated; on/off flags get none.
    assert "(default 3.4: head and shoulders" in text and "(default: 3.4)" not in text
    assert "(default: False)" not in text


def test_a_jobs_line_with_a_bad_value_fails_alone():
    from vexpress_model.batch import job_namespace
    from vexpress_model.errors import InputError

    defaults = cli.build_parser(inputs_required=False).parse_args([])
    with pytest.raises(InputError, match=r"argument --crf: must be between 0 and 51"):
        job_namespace(defaults, {"reference_image_path": "a.png", "audio_path": "a.wav", "crf": 80})


def test_kps_path_with_fix_face_says_it_is_not_used(caplog):
    from vexpress_model.request import request_from_cli_args

    argv = ["--reference_image_path", "a.png", "--audio_path", "a.wav", "--retarget_strategy", "fix_face",
            "--kps_path", "track.npz"]
    with caplog.at_level(logging.WARNING, logger="vexpress"):
        request_from_cli_args(cli.build_parser().parse_args(argv))
    assert [r.getMessage() for r in caplog.records] == [
        "--kps_path is not used: fix_face keeps the reference's head still; to follow the track use "
        "--retarget_strategy no_retarget, offset_retarget or naive_retarget"]


def test_check_model_bad_flag_is_one_line(capsys):
    err = _error_of(check_model.main, ["--bogus"], capsys)
    assert err == ("error: unrecognized arguments: --bogus; `python -m vexpress_model.check_model --help` lists "
                   "the flags\n")


def test_check_model_does_not_warn_about_insightface_when_mediapipe_detects(tiny_model_dir, monkeypatch):
    from vexpress_model.inputs import face_mediapipe

    monkeypatch.setattr(face_mediapipe, "mediapipe_available", lambda: True)
    result = check_model.check_model_folder(tiny_model_dir)
    entry = next(e for e in result.entries if e.name == "insightface buffalo_l")
    assert (entry.status, entry.detail) == (
        "ok", "not found: faces are detected with MediaPipe (installed; --face_detector auto picks it)")
    assert check_model.format_result(result).splitlines()[-1] == "OK: this folder will load"
    monkeypatch.setattr(face_mediapipe, "mediapipe_available", lambda: False)
    entry = next(e for e in check_model.check_model_folder(tiny_model_dir).entries
                 if e.name == "insightface buffalo_l")
    assert entry.status == "warning" and "MediaPipe is not installed" in entry.detail
    assert entry.fix.endswith(", or pip install mediapipe")


def test_download_command_fetches_exactly_the_missing_files(tmp_path, monkeypatch, capsys):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    asked: list[str] = []

    def hf_hub_download(repo_id, filename, *, revision="main", local_dir=None, token=None, tqdm_class=None):
        asked.append(f"{repo_id}/{filename}")
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stand-in")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    root = tmp_path / "model_ckpts"
    (root / "v-express").mkdir(parents=True)
    (root / "v-express" / "denoising_unet.bin").write_bytes(b"already here")
    assert download.main(["--model_dir", str(root)]) == 0
    assert capsys.readouterr().out == f"downloaded 10 file(s) into {root}\n"
    assert "tk93/V-Express/denoising_unet.bin" not in asked and len(asked) == 10
    assert "tk93/V-Express/det_10g.onnx" not in " ".join(asked)  # only with --insightface
    assert (root / "wav2vec2-base-960h" / "model.safetensors").read_bytes() == b"stand-in"
    assert download.main(["--model_dir", str(root)]) == 0
    assert capsys.readouterr().out == f"{root} already holds every file\n" and len(asked) == 10


def test_library_request_takes_string_paths(tmp_path):
    """The README's library call with strings instead of Paths (an AttributeError deep in locate_models before)."""
    from vexpress_model.request import GenerationRequest

    request = GenerationRequest(reference_image="ref.jpg", audio="speech.mp3", output=str(tmp_path / "out.mp4"),
                                model_dir="model_ckpts", kps_path="kps.npz", dump_dir="dump",
                                path_overrides={"vae": "vae_folder"})
    assert request.reference_image == Path("ref.jpg") and request.audio == Path("speech.mp3")
    assert request.output == tmp_path / "out.mp4" and request.model_dir == Path("model_ckpts")
    assert request.kps_path == Path("kps.npz") and request.dump_dir == Path("dump")
    assert request.path_overrides == {"vae": Path("vae_folder")} and request.reference_kps_path is None


def test_a_flag_value_may_start_with_a_minus_sign():
    """argparse takes "-50,-50,200,200" for a flag ("expected one argument"); a face box can start there."""
    args = cli.build_parser().parse_args(["--reference_image_path", "a.png", "--audio_path", "a.wav",
                                          "--face_box", "-50,-50,200,200", "--fps", "-inf", "--seed", "-3"])
    assert (args.face_box, args.fps, args.seed) == ("-50,-50,200,200", float("-inf"), -3)


def test_verbose_shows_the_native_logs_only_when_asked():
    from vexpress_model.request import request_from_cli_args

    inputs = ["--reference_image_path", "a.png", "--audio_path", "a.wav"]
    assert request_from_cli_args(cli.build_parser().parse_args(inputs)).quiet_native_logs is True
    assert request_from_cli_args(cli.build_parser().parse_args([*inputs, "--verbose"])).quiet_native_logs is False
    from vexpress_model.batch import job_namespace  # every batch job: the batch command line's flags

    defaults = cli.build_parser(inputs_required=False).parse_args([])
    job = job_namespace(defaults, {"reference_image_path": "a.png", "audio_path": "a.wav"})
    assert request_from_cli_args(job).quiet_native_logs is True
    job = job_namespace(defaults, {"reference_image_path": "a.png", "audio_path": "a.wav", "verbose": True})
    assert request_from_cli_args(job).quiet_native_logs is False


def test_the_model_files_recipe_fills_an_existing_folder_without_nesting(tmp_path):
    """The recipe of the missing-files message, run after its `git clone` on a stand-in clone, into a model folder
    that exists already (a download had begun): the files land in the released layout, the existing one is kept."""
    import subprocess

    clone = tmp_path / "V-Express"
    (clone / "model_ckpts" / "sd-vae-ft-mse").mkdir(parents=True)
    (clone / "model_ckpts" / "sd-vae-ft-mse" / "config.json").write_text("{}")
    for name in ("denoising_unet.bin", "reference_net.bin"):
        (clone / name).write_bytes(b"from the clone")
    root = tmp_path / "model_ckpts"
    (root / "v-express").mkdir(parents=True)
    (root / "v-express" / "reference_net.bin").write_bytes(b"downloaded before")
    recipe = download.released_layout_hints(root)[0]
    command = recipe.split("git clone https://huggingface.co/tk93/V-Express && ", 1)[1]
    subprocess.run(["sh", "-c", command], cwd=tmp_path, check=True)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "sd-vae-ft-mse/config.json", "v-express/denoising_unet.bin", "v-express/reference_net.bin"]
    assert (root / "v-express" / "reference_net.bin").read_bytes() == b"downloaded before"
