"""Errors a user can act on.

Every error raised for bad input, a missing or broken model file, or an impossible setting derives from
:class:`VExpressError`. Its message names the file or setting and says what to do; the command line prints
it as one line (exit code 2) and the ComfyUI nodes let it surface unchanged.
"""

from __future__ import annotations


class VExpressError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""


class InputError(VExpressError):
    """A user-supplied input (image, audio, kps file, output path, setting) is unusable."""


class FaceNotFoundError(InputError):
    """No face could be detected where one is required."""


class ModelFolderError(VExpressError):
    """A model file is missing, unreadable or incomplete."""


class CheckpointMismatchError(ModelFolderError):
    """A checkpoint's keys or shapes do not match the network it is loaded into."""


class MissingModelFilesError(ModelFolderError):
    """Model files are missing and were not (or could not be) downloaded.

    The one exception to one-line messages: it holds a short table of the files (name, size, destination) and the
    ways to get them, so the command line prints it over several lines (still exit code 2).
    """
