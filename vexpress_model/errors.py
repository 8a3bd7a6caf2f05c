"""Errors a user can act on.

Every error raised for bad input, a missing or broken model file, or an impossible setting derives from
:class:`VExpressError`. Its message names the file or setting and says what to do; the command line prints
it as one line (exit code 2) and the ComfyUI nodes let it surface unchanged.
"""

from __future__ import annotations


class VExpressError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""


class InputError(VExpressError, ValueError):
    """A user-supplied input (image, audio, kps file, output path, setting) is unusable.

    Also a ``ValueError``: library callers that catch a bad value as ``ValueError`` keep working."""


class FaceNotFoundError(InputError):
    """No face could be detected where one is required."""


class FrameLimitError(InputError):
    """More frames in one denoising call than the motion modules' position encoding covers (32)."""


class ReferenceBankError(VExpressError, ValueError):
    """A reference bank does not fit the denoising UNet (other model size, missing blocks)."""


class MissingPackageError(VExpressError):
    """A Python package a feature needs (a face detector) is not installed, or is a version without what we use;
    the message says what to pip install."""


class ModelFolderError(VExpressError):
    """A model file is missing, unreadable or incomplete."""


class CheckpointMismatchError(ModelFolderError):
    """A checkpoint's keys or shapes do not match the network it is loaded into."""


class GenerationCancelled(Exception):
    """The caller's cancel callback asked the pipeline to stop (not a user error: the command line exits 130)."""


class Terminated(BaseException):
    """SIGTERM arrived (torchrun stops the other workers when one fails). A BaseException, like
    KeyboardInterrupt, so that ``except Exception`` clauses do not swallow it; ``finally`` clauses still run."""


class DistributedSetupError(VExpressError):
    """A torchrun launch cannot run: bad environment variables, a device that does not fit, no process group.

    ``same_on_every_process``: every process of the machine meets the same problem (no CUDA at all), so one of
    them (local rank 0) says it, not each."""

    def __init__(self, message: str, *, same_on_every_process: bool = False) -> None:
        super().__init__(message)
        self.same_on_every_process = same_on_every_process


class ProcessFailedError(VExpressError):
    """A phase of a torchrun launch failed on some process; every process raises this with that process's message.

    ``rank`` is the first failing process; ``user_error`` whether the cause was a :class:`VExpressError` there.
    """

    def __init__(self, message: str, *, rank: int, user_error: bool) -> None:
        super().__init__(message)
        self.rank = rank
        self.user_error = user_error


class MissingModelFilesError(ModelFolderError):
    """Model files are missing and were not (or could not be) downloaded.

    The one exception to one-line messages: it holds a short table of the files (name, size, destination) and the
    ways to get them, so the command line prints it over several lines (still exit code 2).
    """
