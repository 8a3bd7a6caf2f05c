"""Where the networks live while each stage of a generation runs: the :class:`Placement` contract and the library's
:class:`ModulePlacement`.

The pipeline never moves a network itself: before each stage it calls ``placement.enter_stage(name, modules,
activation_bytes=...)`` with the networks that stage needs and the activation memory it will take on top of their
weights, after it (also after an error or a cancel) ``placement.exit_stage(name, modules)``, and the caller calls
``placement.finish()`` when it is done with a generation. :class:`ModulePlacement` moves modules with
``Module.to``; the ComfyUI nodes substitute one whose ``enter_stage`` calls ``comfy.model_management.load_models_gpu``
on the matching ModelPatchers with ``memory_required=activation_bytes`` (``nodes/memory_management.py``), so
ComfyUI's own memory manager decides what stays resident.

Stages and their networks (roles as in ``VExpressModels``):

=============  ==========================================================
``reference``  ``vae`` (encoder), ``reference_net``
``kps``        ``kps_guider``
``audio``      ``audio_encoder`` and/or ``audio_projection``
``denoise``    ``denoising_unet``
``decode``     ``vae``
=============  ==========================================================
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import nn

logger = logging.getLogger("vexpress.pipeline")


@runtime_checkable
class Placement(Protocol):
    """Puts the networks of a stage on the compute device (and, if it wants, others off it)."""

    def enter_stage(self, name: str, modules: Mapping[str, nn.Module], *, activation_bytes: int) -> None:
        """Called before stage ``name`` runs; ``modules`` maps a role (``"vae"``, ...) to its network;
        ``activation_bytes`` is the device memory the stage's activations need beyond the weights (0 when small)."""

    def exit_stage(self, name: str, modules: Mapping[str, nn.Module]) -> None:
        """Called after stage ``name`` ran, also when it raised."""

    def finish(self) -> None:
        """Called when the caller is done with a generation (the CLI after writing, the nodes after decoding)."""


def module_device(module: nn.Module) -> torch.device | None:
    """The device of a module's first parameter or buffer (None for a module without tensors)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


class ModulePlacement:
    """The library's placement: a stage's networks on ``device``; with ``offload``, only while the stage runs.

    ``offload=False`` (keep-all): a network is moved to ``device`` when a stage first needs it and stays there --
    fastest when everything fits. ``offload=True`` (the original's ``--save_gpu_memory``, but effective): a
    stage's networks go to ``device`` when it starts and back to ``offload_device`` when it ends, so the device
    holds one stage's networks at a time (the denoising UNet alone while sampling) and none between stage calls.
    Nothing is deleted, so the same models serve the next generation.
    """

    def __init__(
        self,
        device: torch.device | str,
        *,
        offload: bool = False,
        offload_device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.offload = offload
        self.offload_device = torch.device(offload_device)
        self._resident: dict[int, tuple[str, nn.Module]] = {}

    def enter_stage(self, name: str, modules: Mapping[str, nn.Module], *, activation_bytes: int = 0) -> None:
        wanted = {id(module) for module in modules.values()}
        if self.offload:
            for key, (role, module) in list(self._resident.items()):
                if key not in wanted:
                    logger.debug("stage %s: moving %s to %s", name, role, self.offload_device)
                    module.to(self.offload_device)
                    del self._resident[key]
            self._release_cache()
        for role, module in modules.items():
            if module_device(module) != self.device:
                logger.debug("stage %s: moving %s to %s", name, role, self.device)
                module.to(self.device)
            self._resident[id(module)] = (role, module)

    def exit_stage(self, name: str, modules: Mapping[str, nn.Module]) -> None:
        if not self.offload:
            return
        for role, module in modules.items():
            if self._resident.pop(id(module), None) is not None:
                logger.debug("stage %s done: moving %s to %s", name, role, self.offload_device)
                module.to(self.offload_device)
        self._release_cache()

    def finish(self) -> None:
        if not self.offload:
            return
        for role, module in self._resident.values():
            logger.debug("finished: moving %s to %s", role, self.offload_device)
            module.to(self.offload_device)
        self._resident.clear()
        self._release_cache()

    def _release_cache(self) -> None:
        # Module.to frees the device copies only from PyTorch's point of view; hand the cached blocks back too, so
        # that other processes (and ComfyUI's memory estimates) see the memory as free.
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()
