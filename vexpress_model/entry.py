"""What every command line of the package does around its work: log setup, one-line error messages and exit codes.

``run_command(work, log_level=..., log_format=...)`` runs ``work()`` and returns the process exit code: its own
result on success; 2 (``EXIT_USER_ERROR``) for a :class:`~vexpress_model.errors.VExpressError`, printed as one
line ``error: ...`` on stderr (a missing-model-files table keeps its lines); 130 (``EXIT_INTERRUPTED``) for Ctrl-C
or a cancelled generation.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from .errors import GenerationCancelled, MissingModelFilesError, VExpressError

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def one_line(error: BaseException) -> str:
    """The error's message on one line, so that scripts and logs keep it together."""
    return " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors read like the commands' other errors: one line ``error: ...`` pointing at
    ``--help``, exit code 2 (argparse's own prints the whole usage first: dozens of lines for these commands)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message}; `{self.prog} --help` lists the flags\n")


def with_defaults_in_help(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add "(default: X)" to the help of every flag whose default is a value and whose help does not already
    say it (on/off flags and empty defaults are left alone)."""
    for action in parser._actions:
        default = action.default
        if not action.option_strings or default is None or isinstance(default, bool):
            continue
        if default in ("", argparse.SUPPRESS):
            continue
        text = action.help or ""
        if "default" not in text:
            action.help = (text + " " if text else "") + "(default: %(default)s)"
    return parser


def setup_logging(level: int, log_format: str = "%(message)s") -> None:
    """Log to stderr at ``level``, unless the caller (a test, an embedding program) configured logging already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format=log_format)


def run_command(
    work: Callable[[], int | None],
    *,
    log_level: int = logging.INFO,
    log_format: str = "%(message)s",
    interrupted_message: str = "interrupted",
) -> int:
    """Run one command's ``work`` with logging set up; map its outcome to an exit code (see the module doc)."""
    setup_logging(log_level, log_format)
    try:
        result = work()
    except MissingModelFilesError as error:
        print(f"error: {error}", file=sys.stderr)  # a table of files and the ways to get them: several lines
        return EXIT_USER_ERROR
    except VExpressError as error:
        print("error: " + one_line(error), file=sys.stderr)
        return EXIT_USER_ERROR
    except (KeyboardInterrupt, GenerationCancelled):
        print(interrupted_message, file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if result is None else int(result)
