"""The ``--speed`` presets (docs/speed.md): one word for the solver, the step count, DeepCache's interval and the
guidance cut-off; explicit values override the preset's. No torch here: the command line checks a request with it
before anything heavy is imported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..options import SPEED_PRESETS, check_choice


@dataclass(frozen=True)
class SpeedPreset:
    """What one ``--speed`` word sets."""

    scheduler: str
    num_inference_steps: int
    cache_interval: int
    cfg_end: float


# Chosen from benchmarks/bench_speed_modes.py (docs/speed.md has the table) inside what published results support:
# at least 12 solver steps (DPM-Solver++ and UniPC reach DDIM-25/50 quality at 10-20), a cache interval of at most 3
# (DeepCache's and LatentSync's setting), guidance over at least the first 60 % of the steps.
PRESETS: dict[str, SpeedPreset] = {
    "exact": SpeedPreset("ddim", 25, 1, 1.0),
    "balanced": SpeedPreset("dpmpp_2m", 16, 2, 0.8),
    "fast": SpeedPreset("dpmpp_2m", 12, 3, 0.6),
}
DEFAULT_CACHE_BRANCH = 0


def speed_values(
    speed: str = "exact",
    *,
    num_inference_steps: int | None = None,
    scheduler: str | None = None,
    cache_interval: int | None = None,
    cache_branch: int | None = None,
    cfg_end: float | None = None,
) -> dict[str, Any]:
    """The five sampling values of preset ``speed``, each replaced by the explicit value where one is given (None:
    the preset's). Keys as :class:`~vexpress_model.pipeline.hooks.SamplingSettings` fields."""
    preset = PRESETS[check_choice(speed, SPEED_PRESETS, "speed")]
    explicit = {"num_inference_steps": num_inference_steps, "scheduler": scheduler, "cache_interval": cache_interval,
                "cache_branch": cache_branch, "cfg_end": cfg_end}
    values: dict[str, Any] = {"num_inference_steps": preset.num_inference_steps, "scheduler": preset.scheduler,
                              "cache_interval": preset.cache_interval, "cache_branch": DEFAULT_CACHE_BRANCH,
                              "cfg_end": preset.cfg_end}
    values.update({key: value for key, value in explicit.items() if value is not None})
    return values
