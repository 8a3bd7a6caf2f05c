"""What every command line of the package does around its work: log setup, one-line error messages and exit codes.

``run_command(work, log_level=..., log_format=...)`` is the one exit path of every command (generate, torchrun,
batch, extract_kps, download, check_model): it runs ``work()`` and returns the process exit code: its own result on
success; 2 (``EXIT_USER_ERROR``) for a :class:`~vexpress_model.errors.VExpressError`, printed as one line
``error: ...`` on stderr (a missing-model-files table keeps its lines); 130 (``EXIT_INTERRUPTED``) for Ctrl-C, a
cancelled generation or torchrun's SIGTERM. A command with failures of its own (a torchrun process) words them
through ``explain``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from .errors import GenerationCancelled, MissingModelFilesError, Terminated, VExpressError

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

Outcome = tuple[str | None, int]
"""How a command ends after an error: the message for stderr (None: nothing) and the exit code."""


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
    log_level: int | None = logging.INFO,
    log_format: str = "%(message)s",
    interrupted_message: str = "interrupted",
    explain: Callable[[BaseException], Outcome | None] | None = None,
) -> int:
    """Run one command's ``work`` with logging set up (``log_level`` None: ``work`` sets it up itself); map its
    outcome to an exit code (see the module doc). ``explain(error)`` gives a command's own message and exit code
    for an error, or None for the usual ones; an error neither knows propagates (a bug: its traceback is shown)."""
    if log_level is not None:
        setup_logging(log_level, log_format)
    try:
        result = work()
    except BaseException as error:
        outcome = (explain(error) if explain is not None else None) or _usual_outcome(error, interrupted_message)
        if outcome is None:
            raise
        message, code = outcome
        if message is not None:
            print(message, file=sys.stderr)
        return code
    return EXIT_OK if result is None else int(result)


def _usual_outcome(error: BaseException, interrupted_message: str) -> Outcome | None:
    if isinstance(error, MissingModelFilesError):
        return f"error: {error}", EXIT_USER_ERROR  # a table of files and the ways to get them: several lines
    if isinstance(error, VExpressError):
        return "error: " + one_line(error), EXIT_USER_ERROR
    if isinstance(error, (KeyboardInterrupt, GenerationCancelled, Terminated)):
        return interrupted_message, EXIT_INTERRUPTED
    return None
