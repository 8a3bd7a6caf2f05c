"""ComfyUI entry point of the V-Express node pack.

ComfyUI imports this file as a package when the repository sits in ``ComfyUI/custom_nodes/<any name>/``.
It registers the nodes through the V3 ``comfy_entrypoint`` and serves ``web/`` (the node docs). Nothing heavy
happens here: no model loading, no device probing, no downloads; the model folders are only registered with
``folder_paths`` (see ``nodes/folders.py``). The nodes import the bundled ``vexpress_model`` library relatively, as
a sub-package of this one, so a clone into ``custom_nodes`` needs no installation and registers nothing globally.

Outside ComfyUI (``import`` of this folder by test tools or linters) the module only defines ``WEB_DIRECTORY``.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("vexpress.nodes")

WEB_DIRECTORY = "./web"


if __package__:  # imported as a package (ComfyUI, tests); a bare `python __init__.py` does nothing
    from .nodes import _comfy

    if _comfy.AVAILABLE:
        from .nodes.extension import comfy_entrypoint

        __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
    elif _comfy.inside_comfyui():
        logger.error(
            "V-Express nodes need ComfyUI >= %s (the V3 node API, comfy_api.latest); this ComfyUI has none: %s. "
            "Update ComfyUI.",
            _comfy.MIN_COMFYUI,
            _comfy.IMPORT_ERROR,
        )
