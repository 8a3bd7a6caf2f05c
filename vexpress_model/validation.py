"""Checks of single user-given values, shared by the command line, generate() and the ComfyUI nodes.

A NaN or infinite float passes every ``<`` / ``>`` range check (all comparisons with NaN are false), so
without an explicit check a NaN attention weight gives an all-black video and a NaN guidance scale silently
turns guidance off. Every float setting therefore goes through :func:`require_finite`.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

from .errors import InputError, VExpressError

# DDIM's training schedule has 1000 steps; more inference steps than that repeat timesteps.
MAX_INFERENCE_STEPS = 1000
# libx264's constant-quality scale: 0 (lossless) to 51.
MAX_CRF = 51


def require_finite(value: float, name: str) -> float:
    """``value`` as a float; :class:`InputError` naming ``name`` if it is not a finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {value!r}; give a real value")
    return number


def require_inference_steps(steps: int, name: str = "num_inference_steps") -> int:
    """1 to :data:`MAX_INFERENCE_STEPS` denoising steps."""
    if not 1 <= int(steps) <= MAX_INFERENCE_STEPS:
        raise InputError(
            f"{name} must be between 1 and {MAX_INFERENCE_STEPS} (the scheduler's training steps), got {steps}"
        )
    return int(steps)


def range_problem(value: int, low: int, high: int | None = None, why: str = "") -> str | None:
    """What is wrong with the whole number ``value`` for the range ``low .. high`` (no upper bound when None), as
    "must be ..., got ..." (the command line's flag checks and :func:`require_whole_number` share it); None if
    nothing."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return f"must be a whole number, got {value!r}"
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        return f"must be {bounds}{why}, got {value}"
    return None


def require_whole_number(value: int, name: str, low: int, high: int | None = None, why: str = "") -> int:
    """``value`` if it is a whole number from ``low`` to ``high``; else :class:`InputError` naming ``name``."""
    problem = range_problem(value, low, high, why)
    if problem is not None:
        raise InputError(f"{name} {problem}")
    return value


def require_file(
    path: Path | str | None, what: str, fix: str, error: type[VExpressError] = InputError
) -> Path:
    """An existing regular file; the message says whether the path is missing or a directory."""
    if path is None:
        raise error(f"no {what} was given; {fix}")
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a file; {fix}")
    if not path.is_file():
        raise error(f"{what} {path} does not exist; {fix}")
    return path


def require_fraction(value: float, name: str) -> float:
    """A finite number in (0, 1] (a fraction of the denoising steps)."""
    number = require_finite(value, name)
    if not 0.0 < number <= 1.0:
        raise InputError(f"{name} must be greater than 0 and at most 1 (a fraction of the steps), got {value!r}")
    return number
