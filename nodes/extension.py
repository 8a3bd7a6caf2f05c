"""Registration: the ``ComfyExtension`` that lists the pack's nodes (imported only inside ComfyUI)."""

from __future__ import annotations

from . import _comfy, folders


def node_classes() -> list[type]:
    """Every node class of the pack, in menu order."""
    from . import audio, full_frame, kps, loader, sampler, video

    return [*loader.NODES, *audio.NODES, *kps.NODES, *full_frame.NODES, *sampler.NODES, *video.NODES]


class VExpressExtension(_comfy.ComfyExtension):
    async def get_node_list(self) -> list[type]:
        return node_classes()


async def comfy_entrypoint() -> VExpressExtension:
    """Called by ComfyUI's loader (V3 registration)."""
    return VExpressExtension()


# Model folders are registered when ComfyUI imports the pack (cheap: a table update, nothing is scanned), so
# that node definitions and API clients see them from the first /object_info on.
folders.register()
