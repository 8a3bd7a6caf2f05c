"""Bad values on the command line: a directory where a file belongs, too many steps, NaN/inf floats, reference
kps far outside the frame. Each ends with exit code 2, one line on stderr and nothing written (``run_bad``)."""

from __future__ import annotations

import json
import logging

import pytest

from vexpress_model.cli import main

from .test_cli import good_args, run_bad  # noqa: F401  (good_args is a fixture)


@pytest.mark.parametrize(
    "flag", ["--reference_image_path", "--audio_path", "--kps_path", "--reference_kps_path", "--motion_module_path"]
)
def test_directory_instead_of_a_file(good_args, capsys, tmp_path, flag):  # noqa: F811
    folder = tmp_path / "a_folder"
    folder.mkdir()
    changes = {flag: str(folder)}
    if flag == "--kps_path":
        changes["--retarget_strategy"] = "no_retarget"
    message = run_bad(good_args, capsys, **changes)
    assert "a_folder is a directory, not a file" in message
    assert "does not exist" not in message


def test_too_many_steps_refused_before_loading_models(good_args, capsys, tmp_path):  # noqa: F811
    # A model folder that does not exist: had the models been looked at, the error would be about them.
    message = run_bad(good_args, capsys, **{"--num_inference_steps": "1001", "--model_dir": str(tmp_path / "none")})
    assert message == (
        "error: --num_inference_steps must be between 1 and 1000 (the scheduler's training steps), got 1001"
    )


@pytest.mark.parametrize("flag", ["--guidance_scale", "--reference_attention_weight", "--audio_attention_weight",
                                  "--fps"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_floats(good_args, capsys, flag, value):  # noqa: F811
    message = run_bad(good_args, capsys, **{f"{flag}={value}": ""})  # "=": -inf is not taken for a flag
    assert f"{flag} must be a finite number, got {float(value)!r}" in message


def test_reference_kps_far_outside_the_frame(good_args, capsys, tmp_path):  # noqa: F811
    kps = tmp_path / "ref.json"
    kps.write_text(json.dumps([[20, 25], [44, 25], [1e9, 40]]))
    message = run_bad(good_args, capsys, **{"--reference_kps_path": str(kps)})
    assert "far outside the 64x64 frame" in message and "ref.json" in message


def test_reference_kps_a_little_outside_only_warns(good_args, tmp_path, caplog):  # noqa: F811
    from vexpress_model.cli import build_parser
    from vexpress_model.generate import reference_keypoints, request_from_cli_args

    kps = tmp_path / "ref.json"
    kps.write_text(json.dumps([[20, 25], [44, 25], [66, 40]]))
    args = {**good_args, "--reference_kps_path": str(kps)}
    argv = [part for key, value in args.items() for part in ((key, value) if value else (key,))]
    request = request_from_cli_args(build_parser().parse_args(argv))
    with caplog.at_level(logging.WARNING, logger="vexpress.inputs"):
        points = reference_keypoints(request, None, None)
    assert points.tolist() == [[20, 25], [44, 25], [66, 40]]
    assert any("outside the 64x64 frame" in r.getMessage() for r in caplog.records)


def test_reference_kps_in_the_portraits_own_pixels(good_args, media_dir, tmp_path):  # noqa: F811
    from PIL import Image

    from vexpress_model.cli import build_parser
    from vexpress_model.generate import reference_keypoints, request_from_cli_args

    width, height = Image.open(media_dir / "portrait.png").size
    kps = tmp_path / "ref.json"
    kps.write_text(json.dumps([[width / 4, height / 2], [width * 3 / 4, height / 2], [width / 2, height]]))
    args = {**good_args, "--reference_kps_path": str(kps), "--reference_kps_in": "image"}
    argv = [part for key, value in args.items() for part in ((key, value) if value else (key,))]
    points = reference_keypoints(request_from_cli_args(build_parser().parse_args(argv)), None, None)
    assert points.tolist() == [[16, 32], [48, 32], [32, 64]]


def test_help_says_which_pixels(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "in pixels of the --image_width x --image_height output frame" in text
    assert "portrait's own pixels with --reference_kps_in image (always with --full_frame)" in text


def test_valid_values_are_kept(good_args):  # noqa: F811
    from vexpress_model.cli import build_parser
    from vexpress_model.generate import check_request, request_from_cli_args

    args = {**good_args, "--num_inference_steps": "1000", "--guidance_scale": "0"}
    argv = [part for key, value in args.items() for part in ((key, value) if value else (key,))]
    check_request(request_from_cli_args(build_parser().parse_args(argv)))  # no error


@pytest.mark.parametrize("extra", [{}, {"--full_frame": ""}])
def test_a_decompression_bomb_image_is_refused_before_decoding(good_args, capsys, tmp_path, extra):  # noqa: F811
    from tests.media import png_header_only

    bomb = png_header_only(tmp_path / "bomb.png", 20000, 20000)  # 45 bytes claiming 400 megapixels
    message = run_bad(good_args, capsys, **{"--reference_image_path": str(bomb)}, **extra)
    assert message == (f"error: reference image {bomb} is 400 megapixels, more than the 67 megapixels (8192x8192) "
                       "this package reads; scale it down first (for example to 4096 pixels on the longer side, in "
                       "any image editor)")


def test_full_frame_reference_kps_far_outside_the_photo(good_args, capsys, tmp_path):  # noqa: F811
    kps = tmp_path / "ref.json"
    kps.write_text(json.dumps([[200, 250], [300, 250], [1e9, 300]]))
    message = run_bad(good_args, capsys, **{"--reference_kps_path": str(kps), "--full_frame": ""})
    assert message == (f"error: reference kps file {kps} has a point at (1e+09, 300), far outside the 512x512 "
                       "frame; give the keypoints in pixels of that frame")
