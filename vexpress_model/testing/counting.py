"""Counting the networks' calls from outside the pipeline (tests, benchmarks): forward hooks, so the library keeps
no counters of its own."""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch import nn

# The role whose calls are counted for each network; the VAE's decoder runs once per decode call.
ROLES: dict[str, tuple[str, ...]] = {
    "unet": ("denoising_unet",),
    "reference_net": ("reference_net",),
    "kps_guider": ("kps_guider",),
    "vae_decode": ("vae", "decoder"),
}


class CallCounter:
    """``calls[name]``: how often each network of ``models`` ran while the counter was open (``with
    CallCounter(models) as calls: ...``); ``calls["unet_images"]``: images (batch x frames) the UNet produced."""

    def __init__(self, models: Any) -> None:
        self.calls: Counter[str] = Counter()
        self._handles: list[Any] = []
        for name, path in ROLES.items():
            module: Any = models
            for attribute in path:
                module = getattr(module, attribute, None)
            if isinstance(module, nn.Module):
                self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Any:
        def count(module: nn.Module, args: Any, output: Any) -> None:
            self.calls[name] += 1
            if name == "unet":
                self.calls["unet_images"] += int(output.shape[0] * output.shape[2])

        return count

    def __getitem__(self, name: str) -> int:
        return self.calls[name]

    def __enter__(self) -> CallCounter:
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
