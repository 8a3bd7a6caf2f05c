"""Output files, written safely: one home for the rules every writer of the package follows (the video, the audio
that extract_kps saves, kps files).

* Before any work starts, :func:`require_writable_file` says in one line why a path cannot take a file (a folder of
  that name, a file where a folder should be, a missing or read-only folder), so a long run never fails at its end.
* A writer fills a hidden file beside the target (:func:`partial_path`) and renames it to the target only when it
  is complete, so an interrupted or failed write never leaves a half-written file under the final name, and an
  existing file is replaced only by a whole new one.
* A writer that is killed outright (SIGKILL, a power cut) cannot remove its hidden file. The hidden name holds the
  writer's machine and process id, so the next writer of the same target removes the ones whose writer is gone
  (:func:`remove_stale_partials`): only hidden files of that exact target, written on this machine, by a process
  that no longer exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Literal

from .errors import InputError

logger = logging.getLogger("vexpress.files")

# "exist": the folder must be there already (nothing is created); "create": missing folders are made now;
# "later": the writer will make them, so only the nearest existing folder has to take files.
FolderPolicy = Literal["exist", "create", "later"]


def require_writable_file(path: Path | str, what: str, *, folders: FolderPolicy = "exist") -> Path:
    """``path`` as a ``Path`` if a file can be written there; :class:`InputError` naming ``what`` (a flag such as
    ``--kps_sequence_save_path``, or words such as ``the output video``) otherwise.

    The last check writes and removes a hidden probe file in the nearest existing folder: file modes do not stop
    root, but a read-only mount or a kernel file system does, and only a real write tells.
    """
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name")
    blocker = next((folder for folder in (parent, *parent.parents) if folder.exists() and not folder.is_dir()), None)
    if blocker is not None:
        raise InputError(f"cannot write {what} {path}: {blocker} is a file, not a folder; choose another path")
    if folders == "exist" and not parent.is_dir():
        raise InputError(
            f"cannot write {what} {path}: folder {parent} does not exist; create it or choose another path"
        )
    try:
        if folders == "create":
            parent.mkdir(parents=True, exist_ok=True)
        existing = next(folder for folder in (parent, *parent.parents) if folder.exists())
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".vexpress-write-test-"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write {what} {path} ({exc.strerror or exc}); choose a writable folder") from None
    return path


def _machine_tag() -> str:
    """Six hex digits naming this machine, so that a hidden file on a shared folder is judged only where its
    process id means something."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def partial_path(path: Path) -> Path:
    """The hidden file a writer fills before it takes ``path``'s name: in the same folder (so the final rename is
    atomic), with the same extension (so encoders pick the same format), the writer's machine and process id (so a
    later run can tell a killed writer's file, :func:`remove_stale_partials`, which runs first) and a random part
    (so two runs aimed at one name never share it)."""
    remove_stale_partials(path)
    return path.with_name(f".{path.stem}.{_machine_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{path.suffix}")


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` exists on this machine (a process of another user exists)."""
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the process exists is checked
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, under another user
        return False
    return False


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove the hidden files (:func:`partial_path`) of earlier writers of ``path`` that were killed before they
    could clean up: only names of exactly that target, from this machine, whose process is gone. Returns them."""
    if os.name != "posix":  # os.kill(pid, 0) is not a harmless probe on Windows
        return []
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.{_machine_tag()}-(\d+)-[0-9a-f]{{8}}\.partial"
                         rf"{re.escape(path.suffix)}")
    removed = []
    try:
        names = [entry.name for entry in os.scandir(path.parent) if entry.is_file(follow_symlinks=False)]
    except OSError:  # no folder yet, or one we may not list: nothing of ours is there
        return []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or int(match.group(1)) == os.getpid() or not _process_gone(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            (path.parent / name).unlink()
            removed.append(path.parent / name)
            logger.info("removed %s, left by an earlier run that was killed while writing %s", name, path.name)
    return removed


def discard(temporary: Path) -> None:
    """Remove a writer's hidden file after a failure; a folder that refuses the write may refuse this too."""
    with contextlib.suppress(OSError):
        temporary.unlink(missing_ok=True)


def write_bytes_atomically(path: Path, payload: bytes, what: str) -> Path:
    """``payload`` in a hidden file beside ``path``, then renamed to ``path``; one-line InputError on failure."""
    temporary = partial_path(path)
    try:
        temporary.write_bytes(payload)
        temporary.replace(path)
    except OSError as exc:
        discard(temporary)
        raise InputError(f"cannot write {what} {path} ({exc.strerror}); choose a writable path") from None
    return path
