"""ComfyUI's memory manager behind the library's ``Placement`` contract (``pipeline/memory.py``).

The library's pipeline calls ``placement.enter_stage(name, {role: module}, activation_bytes=...)`` before each
stage, ``placement.exit_stage(name, modules)`` after it and ``placement.finish()`` at the end. Here each network is
wrapped in its own ``comfy.model_patcher.ModelPatcher`` (made once, by the loader node) and a stage becomes one
``comfy.model_management.load_models_gpu([...], memory_required=activation_bytes, force_full_load=True)`` call:
ComfyUI frees
room for it (offloading other models, ours included, as it sees fit), moves the stage's networks to its device,
and keeps them there until something else needs the memory, so a second run reuses them.

``force_full_load`` because the V-Express networks are plain ``torch.nn`` modules: ComfyUI can stream only modules
built from ``comfy.ops`` in its low-VRAM mode; a plain module it cannot fit would stay on the offload device.
Under ``--novram`` (and when ``--lowvram`` cannot fit a network) ComfyUI leaves a plain module on the offload
device; since it cannot run with its weights on the host, it is then moved to the compute device for its stage
only and moved back as soon as the stage is over, so no such network stays resident between stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _comfy

logger = _comfy.logger


def _patcher_root_class(role: str):
    import torch

    class VExpressNetwork(torch.nn.Module):
        """Holds one V-Express network for a ModelPatcher.

        ModelPatcher sets ``.device`` on the module it manages; diffusers and transformers models expose ``device``
        as a read-only property, so the patcher gets this plain container instead.
        """

        def __init__(self, role: str, network: torch.nn.Module) -> None:
            super().__init__()
            self.role = role
            self.network = network

        def extra_repr(self) -> str:
            return f"role={self.role!r}"

    # ComfyUI logs "Requested to load <class name>": name the class after the network it holds.
    name = "VExpress_" + "".join(part.capitalize() for part in role.split("_"))
    return type(name, (VExpressNetwork,), {"__qualname__": name})


def make_patchers(models: Any, roles: tuple[str, ...]) -> dict[str, Any]:
    """One ModelPatcher per network (on ComfyUI's offload device), keyed by role."""
    mm = _comfy.model_management()
    patcher_module = _comfy.model_patcher()
    load_device = mm.get_torch_device()
    offload_device = mm.unet_offload_device()
    patchers: dict[str, Any] = {}
    for role in roles:
        network = getattr(models, role, None)
        if network is None:
            continue
        network.to(offload_device)
        patchers[role] = patcher_module.ModelPatcher(
            _patcher_root_class(role)(role, network), load_device=load_device, offload_device=offload_device
        )
    return patchers


def compute_device():
    """The device ComfyUI runs models on (CPU with ``--cpu``)."""
    return _comfy.model_management().get_torch_device()


class ComfyPlacement:
    """The library's ``Placement`` protocol over ComfyUI's model management (see the module docstring).

    A stage's ``activation_bytes`` are reserved on top of its weights (ComfyUI evicts other models until that much
    is free); ``offload`` additionally unloads the pipe's networks that a stage does not use (the loader's
    "offload" mode, for long clips on small GPUs).
    """

    def __init__(self, patchers: Mapping[str, Any], *, offload: bool = False) -> None:
        self.patchers = dict(patchers)
        self.offload = offload
        self._by_module = {id(p.model.network): p for p in self.patchers.values()}
        self._forced: list[Any] = []  # patchers moved to the device by _ensure_on_device (ComfyUI did not)

    def _patchers_for(self, modules: Mapping[str, Any]) -> list[Any]:
        found = []
        for role, module in modules.items():
            patcher = self._by_module.get(id(module)) or self.patchers.get(role)
            if patcher is None:
                raise RuntimeError(f"V-Express: no ModelPatcher for the {role} network")
            found.append(patcher)
        return found

    def enter_stage(self, name: str, modules: Mapping[str, Any], *, activation_bytes: int = 0) -> None:
        mm = _comfy.model_management()
        wanted = self._patchers_for(modules)
        self._release_forced(keep=wanted)
        if self.offload:
            self._unload([p for p in self.patchers.values() if all(p is not w for w in wanted)])
        mm.load_models_gpu(wanted, memory_required=int(activation_bytes), force_full_load=True)
        for patcher in wanted:
            self._ensure_on_device(patcher)

    def exit_stage(self, name: str, modules: Mapping[str, Any]) -> None:
        """Nothing: ComfyUI keeps a stage's networks until it needs the memory (see ``enter_stage``)."""

    def finish(self) -> None:
        self._release_forced(keep=[])
        if self.offload:
            self._unload(list(self.patchers.values()))

    def _release_forced(self, keep: list[Any]) -> None:
        for patcher in list(self._forced):
            if all(patcher is not k for k in keep):
                patcher.model.network.to(patcher.offload_device)
                self._forced.remove(patcher)

    def _ensure_on_device(self, patcher: Any) -> None:
        import torch

        target = torch.device(patcher.load_device)
        for tensor in patcher.model.network.parameters():
            device = tensor.device
            break
        else:
            return
        if device.type == target.type and (target.index is None or device.index == target.index):
            return
        logger.info(
            "V-Express: ComfyUI left the %s network on %s (low-VRAM mode); moving it to %s for this stage",
            patcher.model.role, device, target,
        )
        patcher.model.network.to(target)
        if all(patcher is not f for f in self._forced):
            self._forced.append(patcher)

    def _unload(self, patchers: list[Any]) -> None:
        mm = _comfy.model_management()
        if not patchers:
            return
        unloaded = False
        for index in range(len(mm.current_loaded_models) - 1, -1, -1):
            loaded = mm.current_loaded_models[index]
            if any(loaded.model is p for p in patchers):
                if loaded.model_unload():
                    mm.current_loaded_models.pop(index)
                    unloaded = True
        for patcher in patchers:  # a network moved by _ensure_on_device is not in ComfyUI's list
            network = patcher.model.network
            for tensor in network.parameters():
                if tensor.device != patcher.offload_device:
                    network.to(patcher.offload_device)
                    unloaded = True
                break
        if unloaded:
            mm.soft_empty_cache()
