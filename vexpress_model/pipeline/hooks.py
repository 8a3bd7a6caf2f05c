"""What a caller hands the pipeline besides the data: the sampling settings and the optional callbacks (progress,
cancel, intermediate-array dumps)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import GenerationCancelled
from ..options import SCHEDULERS, check_choice
from ..validation import require_finite, require_fraction, require_inference_steps, require_whole_number

ProgressFn = Callable[[int, int, "torch.Tensor | None"], None]
"""``progress(done, total, preview)``: ``done`` of ``total`` UNet calls of the whole sampling; ``preview`` is the
predicted clean latent ``[1, 4, T, h, w]`` after the last call of each step, None otherwise."""

CancelFn = Callable[[], Any]
"""Checked before every UNet call (and between kps / decode chunks). It stops the run by raising (its exception
propagates unchanged) or by returning a true value (then :class:`GenerationCancelled` is raised)."""

DumpFn = Callable[[str, np.ndarray], None]
"""``dump(name, array)`` receives the intermediate arrays under the parity names (``init_latents``,
``ref_latent``, ``audio_proj_output``, ``latents_step{i}``, ``latents_final``, ``video_float``,
``frames_uint8``)."""


@dataclass(frozen=True)
class SamplingSettings:
    """The sampling knobs of the original ``inference.py`` (its defaults), and the fast modes (docs/speed.md), all
    off by default: ``scheduler`` (``options.SCHEDULERS``), ``cache_interval`` (DeepCache: one full UNet step in
    every N; 1 = off), ``cache_branch`` (its depth, 0 = the shallowest), ``cfg_end`` (the fraction of the steps
    that use classifier-free guidance). ``pipeline.speed.speed_settings`` fills them from a ``--speed`` preset."""

    num_inference_steps: int = 25
    guidance_scale: float = 3.5
    reference_attention_weight: float = 0.95
    audio_attention_weight: float = 3.0
    seed: int = 42
    scheduler: str = "ddim"
    cache_interval: int = 1
    cache_branch: int = 0
    cfg_end: float = 1.0

    @classmethod
    def from_values(
        cls,
        num_inference_steps: Any,
        guidance_scale: Any,
        reference_attention_weight: Any,
        audio_attention_weight: Any,
        seed: Any,
        **fast_modes: Any,
    ) -> SamplingSettings:
        """Settings from a front end's values (command-line flags, node widgets), as numbers of the right kind;
        checked as every ``SamplingSettings`` is. ``fast_modes``: ``scheduler``, ``cache_interval``,
        ``cache_branch``, ``cfg_end`` (their defaults where absent)."""
        return cls(int(num_inference_steps), float(guidance_scale), float(reference_attention_weight),
                   float(audio_attention_weight), int(seed), **fast_modes)

    def __post_init__(self) -> None:
        # NaN passes every range check: a NaN weight gives a black video, a NaN scale turns guidance off.
        require_inference_steps(self.num_inference_steps)
        for name in ("guidance_scale", "reference_attention_weight", "audio_attention_weight"):
            require_finite(getattr(self, name), name)
        check_choice(self.scheduler, SCHEDULERS, "scheduler")
        require_whole_number(self.cache_interval, "cache_interval", 1, why=" (1 = every step runs the whole UNet)")
        require_whole_number(self.cache_branch, "cache_branch", 0, why=" (0 = the shallowest)")
        require_fraction(self.cfg_end, "cfg_end")

    @property
    def guided_steps(self) -> int:
        """How many of the first steps use classifier-free guidance (``cfg_end`` of them, at least one)."""
        return max(1, math.ceil(round(self.cfg_end * self.num_inference_steps, 6)))

    @property
    def fast_modes(self) -> bool:
        """Whether any fast mode is on (False: the exact path)."""
        return self.scheduler != "ddim" or self.cache_interval > 1 or self.cfg_end < 1.0


@dataclass
class Hooks:
    """Optional callbacks; see :data:`ProgressFn`, :data:`CancelFn`, :data:`DumpFn`."""

    progress: ProgressFn | None = None
    cancel: CancelFn | None = None
    dump: DumpFn | None = None

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise GenerationCancelled("generation cancelled")

    def emit(self, name: str, tensor: torch.Tensor) -> None:
        if self.dump is not None:
            self.dump(name, tensor.detach().to("cpu", torch.float32).numpy())
