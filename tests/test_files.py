"""vexpress_model/files.py: the one check every writer makes before work starts, and the hidden-file-then-rename
rule that keeps a failed write from leaving half a file or destroying an existing one."""

from __future__ import annotations

from pathlib import Path

import pytest

from vexpress_model.errors import InputError
from vexpress_model.files import partial_path, require_writable_file, write_bytes_atomically


def test_folder_policies(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.mp4"
    with pytest.raises(InputError) as missing:
        require_writable_file(target, "--out")
    assert str(missing.value) == (
        f"cannot write --out {target}: folder {target.parent} does not exist; create it or choose another path"
    )
    assert require_writable_file(target, "--out", folders="later") == target
    assert not (tmp_path / "a").exists()  # "later" leaves creating the folders to the writer
    assert require_writable_file(target, "--out", folders="create") == target
    assert target.parent.is_dir() and list(target.parent.iterdir()) == []  # the probe file is gone


def test_what_cannot_take_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken.npz").mkdir()
    with pytest.raises(InputError, match=r"^--kps .*taken.npz is a folder; give a file name$"):
        require_writable_file(tmp_path / "taken.npz", "--kps")
    blocker = tmp_path / "plain"
    blocker.write_text("x")
    for policy in ("exist", "create", "later"):
        with pytest.raises(InputError, match=f"{blocker} is a file, not a folder; choose another path$"):
            require_writable_file(blocker / "sub" / "k.npz", "--kps", folders=policy)
    assert blocker.read_text() == "x"


def test_a_folder_that_refuses_files(tmp_path: Path) -> None:
    """Only a real write tells (file modes do not stop root): /sys takes no new files, for anyone."""
    with pytest.raises(InputError, match=r"^cannot write the output video /sys/out.mp4 \(.+\); choose a writable"):
        require_writable_file(Path("/sys") / "out.mp4", "the output video")


def test_partial_names_are_hidden_unique_and_keep_the_extension(tmp_path: Path) -> None:
    target = tmp_path / "clip.mp4"
    first, second = partial_path(target), partial_path(target)
    assert first != second and first.parent == second.parent == tmp_path
    assert first.name.startswith(".clip.") and first.name.endswith(".partial.mp4")


def test_atomic_write_replaces_only_with_a_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "kps.json"
    write_bytes_atomically(target, b"old", "kps file")
    write_bytes_atomically(target, b"new", "kps file")
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["kps.json"]

    def refuse(self: Path, other: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(InputError) as failed:
        write_bytes_atomically(target, b"newer", "kps file")
    assert str(failed.value) == f"cannot write kps file {target} (No space left on device); choose a writable path"
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["kps.json"]


def test_only_a_dead_writers_hidden_file_of_the_same_target_is_removed(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from vexpress_model.files import remove_stale_partials

    target = tmp_path / "clip.mp4"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)  # that process has exited: a writer killed before it could clean up
    own = partial_path(target).name  # ".clip.<machine>-<pid>-<random>.partial.mp4"
    machine = own.split(".")[2].split("-")[0]
    names = {
        "dead writer": f".clip.{machine}-{dead_pid}-0123abcd.partial.mp4",
        "live writer": f".clip.{machine}-{os.getpid()}-0123abcd.partial.mp4",
        "other machine": f".clip.{'0' if machine[0] != '0' else '1'}{machine[1:]}-{dead_pid}-0123abcd.partial.mp4",
        "other output": f".clip2.{machine}-{dead_pid}-0123abcd.partial.mp4",
        "other format": f".clip.{machine}-{dead_pid}-0123abcd.partial.mov",
        "not ours": f".clip.{machine}-{dead_pid}-notours.partial.mp4",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_partials(target) == [tmp_path / names["dead writer"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for k, n in names.items() if k != "dead writer")
    assert remove_stale_partials(tmp_path / "missing" / "clip.mp4") == []
