"""ComfyUI's memory manager behind the library's placement hook, and ComfyUI's progress/cancel behind its callbacks.

The library's pipeline calls ``placement.enter_stage(name, {role: module})`` before each stage and
``placement.finish()`` at the end (``vexpress_model/pipeline/placement.py``). Here each network is wrapped in its
own ``comfy.model_patcher.ModelPatcher`` (made once, by the loader node) and a stage becomes one
``comfy.model_management.load_models_gpu([...], memory_required=..., force_full_load=True)`` call: ComfyUI frees
room for it (offloading other models, ours included, as it sees fit), moves the stage's networks to its device,
and keeps them there until something else needs the memory, so a second run reuses them.

``force_full_load`` because the V-Express networks are plain ``torch.nn`` modules: ComfyUI can stream only modules
built from ``comfy.ops`` in its low-VRAM mode; a plain module it cannot fit would stay on the offload device.
Under ``--novram`` (and when ``--lowvram`` cannot fit a network) ComfyUI leaves a plain module on the offload
device; since it cannot run with its weights on the host, it is then moved to the compute device for its stage
only and moved back as soon as the stage is over, so no such network stays resident between stages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

    ``memory_required`` gives, by stage name, the activation bytes to reserve on top of the stage's weights
    (ComfyUI evicts other models until that much is free): a mapping, or a function of the stage name such as the
    pipeline's ``stage_memory_bytes``; ``offload`` additionally unloads the pipe's networks that a stage does not
    use (the loader's "offload" mode, for long clips on small GPUs).
    """

    def __init__(self, patchers: Mapping[str, Any], *, offload: bool = False,
                 memory_required: Mapping[str, int] | Callable[[str], int] | None = None) -> None:
        self.patchers = dict(patchers)
        self.offload = offload
        self.memory_required: Mapping[str, int] | Callable[[str], int] = memory_required or {}
        self.history: list[tuple[str, tuple[str, ...]]] = []
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

    def enter_stage(self, name: str, modules: Mapping[str, Any]) -> None:
        mm = _comfy.model_management()
        wanted = self._patchers_for(modules)
        self.history.append((name, tuple(modules)))
        self._release_forced(keep=wanted)
        if self.offload:
            self._unload([p for p in self.patchers.values() if all(p is not w for w in wanted)])
        mm.load_models_gpu(wanted, memory_required=self._memory_required(name), force_full_load=True)
        for patcher in wanted:
            self._ensure_on_device(patcher)

    def _memory_required(self, name: str) -> int:
        required = self.memory_required
        return int(required(name) if callable(required) else required.get(name, 0))

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


def cancel_check() -> Callable[[], None]:
    """The pipeline's cancel callback: raises ComfyUI's InterruptProcessingException after Cancel / POST /interrupt."""
    return _comfy.model_management().throw_exception_if_processing_interrupted


def progress_reporter(total_hint: int, node_id: str | None = None, preview_latents: bool = True) -> Callable:
    """The pipeline's progress callback: a ComfyUI ProgressBar over the UNet calls, with a preview frame.

    The preview is the middle frame of the predicted clean latents, turned into a small picture by ComfyUI's own
    latent previewer for SD-1.5 latents (TAESD when installed and chosen with ``--preview-method``, else the cheap
    linear latent-to-RGB map).
    """
    utils = _comfy.comfy_utils()
    bar = utils.ProgressBar(max(1, int(total_hint)), node_id=node_id)
    previewer = _latent_previewer() if preview_latents else None

    def report(done: int, total: int, preview: Any = None) -> None:
        image = None
        if preview is not None and previewer is not None:
            try:
                middle = preview.shape[2] // 2
                image = previewer.decode_latent_to_preview_image("JPEG", preview[:, :, middle].float())
            except Exception:
                logger.debug("V-Express preview failed", exc_info=True)
        bar.update_absolute(done, total, image)

    return report


def _latent_previewer():
    try:
        previews, formats = _comfy.latent_preview()
        previewer = previews.get_previewer(compute_device(), formats.SD15())
        if previewer is None:  # --preview-method none (the default): the cheap linear map still shows the motion
            previewer = previews.Latent2RGBPreviewer(formats.SD15().latent_rgb_factors)
        return previewer
    except Exception:
        logger.debug("V-Express: no latent previewer", exc_info=True)
        return None


def stage_progress(total: int, node_id: str | None = None) -> Callable[[int], None]:
    """A plain ProgressBar for the non-sampling nodes (kps extraction, audio encoding): ``update(done)``."""
    bar = _comfy.comfy_utils().ProgressBar(max(1, int(total)), node_id=node_id)
    return lambda done: bar.update_absolute(min(int(done), bar.total), bar.total)
