"""kps files: the original format read without running foreign pickles, written back, and our own formats."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import media
from vexpress_model.errors import InputError
from vexpress_model.inputs.kps import KpsTrack, load_kps, load_reference_kps, save_kps, save_kps_original


class _Exploit:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _points(frames: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(10, 500, (frames, 3, 2)).astype(np.float32)


def test_reads_the_parity_driving_file(parity_dir: Path) -> None:
    path = parity_dir / "inputs" / "astronaut_kps_64_40f.pth"
    track = load_kps(path)
    expected = np.stack(torch.load(path, weights_only=False))
    assert track.points.dtype == np.float32 and track.points.shape == (40, 3, 2)
    np.testing.assert_array_equal(track.points, expected)
    assert (track.fps, track.width, track.height) == (None, None, None)


def test_reads_the_test_media_file(media_dir: Path) -> None:
    track = load_kps(media_dir / "driving_kps.pth")
    np.testing.assert_array_equal(track.points, media.driving_track(60))


def test_reference_json(parity_dir: Path) -> None:
    reference = load_reference_kps(parity_dir / "inputs" / "astronaut_ref_kps_64.json")
    np.testing.assert_array_equal(reference, np.array([[26.73, 25.31], [37.62, 25.83], [31.77, 31.93]], np.float32))
    assert reference.dtype == np.float32


@pytest.mark.parametrize("kind", ["torch_zip", "plain_pickle", "torch_legacy"])
def test_crafted_pickles_are_refused_without_running(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    payload = [np.zeros((3, 2), np.float32), _Exploit(marker)]
    path = tmp_path / "evil.pth"
    if kind == "torch_zip":
        torch.save(payload, path)
    elif kind == "torch_legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(InputError, match="system.*not loaded"):
        load_kps(path)
    assert not marker.exists()


def test_other_globals_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    path.write_bytes(pickle.dumps([{"a": 1}, Path("/etc")]))
    with pytest.raises(InputError, match="pathlib"):
        load_kps(path)


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_tensors_and_legacy_format(tmp_path: Path, legacy: bool) -> None:
    points = _points()
    for value in (torch.from_numpy(points), [torch.from_numpy(p) for p in points], list(points)):
        path = tmp_path / "k.pth"
        torch.save(value, path, _use_new_zipfile_serialization=not legacy)
        np.testing.assert_array_equal(load_kps(path).points, points)


def test_five_point_kps_and_float64_are_accepted(tmp_path: Path) -> None:
    five = np.random.default_rng(2).uniform(0, 100, (4, 5, 2))
    path = tmp_path / "k.pth"
    torch.save(list(five), path)
    np.testing.assert_array_equal(load_kps(path).points, five[:, :3].astype(np.float32))


def test_original_format_round_trip(tmp_path: Path) -> None:
    track = KpsTrack(_points(7), fps=25.0, width=512, height=512)
    path = save_kps_original(tmp_path / "kps.pth", track)
    loaded = torch.load(path, weights_only=False)  # what the original inference.py does
    assert isinstance(loaded, list) and len(loaded) == 7
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (3, 2) for a in loaded)
    np.testing.assert_array_equal(np.stack(loaded), track.points)
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"numpy.core.multiarray\n_reconstruct" in data  # the name numpy 1.x (the original's env) can import
    assert b"numpy._core" not in data
    reread = load_kps(path)
    np.testing.assert_array_equal(reread.points, track.points)
    assert reread.fps is None  # the original format has no room for it


@pytest.mark.parametrize("name", ["kps.npz", "kps.json", "kps.other"])
def test_our_format_round_trip(tmp_path: Path, name: str) -> None:
    track = KpsTrack(_points(9), fps=29.97, width=640, height=360)
    path = save_kps(tmp_path / name, track)
    loaded = load_kps(path)
    np.testing.assert_array_equal(loaded.points, track.points)
    assert (loaded.fps, loaded.width, loaded.height) == (29.97, 640, 360)
    unknown = load_kps(save_kps(tmp_path / f"u_{name}", KpsTrack(_points(2))))
    assert (unknown.fps, unknown.width, unknown.height) == (None, None, None)


def test_json_forms(tmp_path: Path) -> None:
    frames = _points(3).tolist()
    (tmp_path / "list.json").write_text(json.dumps(frames))
    assert load_kps(tmp_path / "list.json").num_frames == 3
    (tmp_path / "dict.json").write_text(json.dumps({"points": frames, "fps": 30}))
    assert load_kps(tmp_path / "dict.json").fps == 30.0
    with pytest.raises(InputError, match="holds 3 frames"):
        load_reference_kps(tmp_path / "list.json")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"hello, world", "neither"),
        (b"\x80\x04\x95garbage", "corrupt"),
        (b"[[1, 2], [3, 4]]", r"shape \(2, 2\)"),
        (b'{"points": [["a", "b"]]}', "numbers"),
        (b"[[1, 2], [3, 4], [5", "not valid JSON"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_kps(path)


@pytest.mark.parametrize(
    "value, message",
    [
        ([], "empty list"),
        ([np.zeros((4, 2), np.float32)], r"shape \(1, 4, 2\)"),
        ([np.zeros((3, 2), np.float32), np.zeros((3, 3), np.float32)], "shape"),
        ({"kps": 1}, "a dict"),
        ([np.array(["a", "b", "c"])], "values of type"),
        ([np.full((3, 2), np.nan, np.float32)], "NaN"),
    ],
)
def test_wrong_shape_or_type(tmp_path: Path, value: object, message: str) -> None:
    path = tmp_path / "k.pth"
    buffer = io.BytesIO()
    torch.save(value, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(InputError, match=message):
        load_kps(path)


def test_missing_file_and_unwritable_target(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_kps(tmp_path / "none.pth")
    with pytest.raises(InputError, match="does not exist"):
        save_kps(tmp_path / "no" / "such" / "k.npz", KpsTrack(_points(1)))
    assert not list(tmp_path.iterdir())


def test_track_validation() -> None:
    with pytest.raises(ValueError):
        KpsTrack(np.zeros((0, 3, 2)))
    with pytest.raises(ValueError):
        KpsTrack(np.zeros((2, 3, 2)), fps=0)
    track = KpsTrack(np.zeros((2, 3, 2), np.float64), fps=25)
    assert track.points.dtype == np.float32 and not track.points.flags.writeable
    assert track.duration_s == pytest.approx(0.08)
    assert "frames=2" in repr(track)


@pytest.mark.parametrize(("arrays", "holds"), [({"kps": np.zeros((4, 3, 2)), "fps": 25.0}, "kps, fps"),
                                               ({}, "arr_0")])
def test_npz_without_points_names_the_key_it_needs(tmp_path: Path, arrays: dict, holds: str) -> None:
    path = tmp_path / "track.npz"
    if arrays:
        np.savez(path, **arrays)
    else:
        np.savez(path, np.zeros((4, 3, 2)))  # positional: numpy names it arr_0
    with pytest.raises(InputError) as refused:
        load_kps(path)
    assert str(refused.value) == (
        f"kps file {path} is a .npz archive without a 'points' array (it holds {holds}); save the [frames, 3, 2] "
        "points under that name (np.savez(path, points=...)) or extract the kps with "
        "`python -m vexpress_model.extract_kps`")
