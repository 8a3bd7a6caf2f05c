"""What every command line of the package does around its work: log setup, one-line error messages and exit codes.

``run_command(work, log_level=..., log_format=...)`` runs ``work()`` and returns the process exit code: its own
result on success; 2 (``EXIT_USER_ERROR``) for a :class:`~vexpress_model.errors.VExpressError`, printed as one
line ``error: ...`` on stderr (a missing-model-files table keeps its lines); 130 (``EXIT_INTERRUPTED``) for Ctrl-C
or a cancelled generation.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .errors import GenerationCancelled, MissingModelFilesError, VExpressError
from .validation import range_problem

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def one_line(error: BaseException) -> str:
    """The error's message on one line, so that scripts and logs keep it together."""
    return " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__


# A value that starts with a minus sign but is numbers, not a flag: "-50,-50,200,200" (a face box), "-inf".
_NEGATIVE_VALUE = re.compile(r"-(\d|\.\d|inf)[\w.+\-]*(\s*,\s*[-+]?[\w.+\-]+)*", re.IGNORECASE)


def _attach_negative_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--flag -50,-50,200,200`` as ``--flag=-50,-50,200,200``: argparse takes a value starting with "-" for a flag
    unless it is a single plain number, and would say "expected one argument"."""
    takes_value = {option for action in parser._actions if action.option_strings and action.nargs is None
                   for option in action.option_strings}
    joined: list[str] = []
    items = list(argv)
    index = 0
    while index < len(items):
        item = items[index]
        following = items[index + 1] if index + 1 < len(items) else None
        if item in takes_value and following is not None and _NEGATIVE_VALUE.fullmatch(following):
            joined.append(f"{item}={following}")
            index += 2
            continue
        joined.append(item)
        index += 1
    return joined


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors read like the commands' other errors: one line ``error: ...`` pointing at
    ``--help``, exit code 2 (argparse's own prints the whole usage first: dozens of lines for these commands).
    A flag's value may start with a minus sign (``--face_box -50,-50,200,200``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message}; `{self.prog} --help` lists the flags\n")

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        argv = sys.argv[1:] if args is None else args
        return super().parse_known_args(_attach_negative_values(self, argv), namespace)


def whole_number(low: int, high: int | None = None, why: str = "") -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (no upper bound when None), refused in one line."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        problem = range_problem(value, low, high, why)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


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
