"""The results manifest of a batch of jobs: JSON Lines, one record per finished job, appended as jobs finish.

Record: ``{"job": <line number in the jobs file>, "status": "done" | "failed", "output": <path>, "seconds": <float>,
"error": <message or null>}``. Several processes (a torchrun batch) append to the same file: each record is one
``write`` of one line to a file opened in append mode, under an exclusive ``flock`` where the platform has it, so
lines never interleave. A line cut short by a crash is ignored when the file is read back.

:meth:`ResultsManifest.check` runs before the first job: a manifest that could not take a record (a folder of
that name, a read-only folder or file) or is not a manifest (not UTF-8 text) is refused in one line then, not after
the first job has run for minutes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files import require_writable_file

logger = logging.getLogger("vexpress.outputs")

STATUSES = ("done", "failed")


class ResultsManifest:
    """Appends job records to ``path`` and reads them back (for resuming)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def check(self) -> None:
        """:class:`InputError` unless records can be appended here and the records already here can be read."""
        what = "the results manifest (--results)"
        require_writable_file(self.path, what, folders="later")
        if self.path.exists():
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND))
            except OSError as exc:
                raise InputError(f"cannot write {what} {self.path} ({exc.strerror or exc}); make it writable or "
                                 "give another --results path") from None
        self.records()

    def append(self, *, job: int, status: str, output: str, seconds: float, error: str | None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        record = {"job": job, "status": status, "output": output, "seconds": round(float(seconds), 3), "error": error}
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"cannot record job {job} ({status}, {output}) in the results manifest {self.path} "
                             f"({exc.strerror or exc}); give a writable --results path") from None
        try:
            try:
                import fcntl

                fcntl.flock(descriptor, fcntl.LOCK_EX)
            except ImportError:  # Windows: one append-mode write is still one record
                pass
            os.write(descriptor, line)
        finally:
            os.close(descriptor)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the file, in order (none when it does not exist)."""
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            return []
        except UnicodeDecodeError:
            raise InputError(f"the results manifest {self.path} is not a results file (not UTF-8 text); give "
                             "another --results path, or move that file away") from None
        except OSError as exc:
            raise InputError(f"cannot read the results manifest {self.path} ({exc.strerror or exc}); give "
                             "another --results path") from None
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                logger.warning("%s, line %d: not a JSON record (cut short?); ignored", self.path, number)
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def done_outputs(self) -> set[str]:
        """Resolved output paths of the jobs recorded as done whose file still exists."""
        done = set()
        for record in self.records():
            output = record.get("output")
            if record.get("status") == "done" and output and Path(output).is_file():
                done.add(str(Path(output).resolve()))
        return done
