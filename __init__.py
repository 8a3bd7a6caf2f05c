"""ComfyUI entry point of the V-Express node pack.

ComfyUI imports this file as a package when the repository sits in ``ComfyUI/custom_nodes/<any name>/``.
It registers the nodes through the V3 ``comfy_entrypoint`` and serves ``web/`` (the node docs). Nothing heavy
happens here: no model loading, no device probing, no downloads; the model folders are only registered with
``folder_paths`` (see ``nodes/folders.py``).

Outside ComfyUI (``import`` of this folder by test tools or linters) the module only defines ``WEB_DIRECTORY``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

logger = logging.getLogger("vexpress.nodes")

WEB_DIRECTORY = "./web"

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))


def _ensure_library() -> None:
    """Make the bundled ``vexpress_model`` library importable under its own name.

    The library imports itself absolutely (``from vexpress_model.errors import ...``), as it does when installed
    with pip. A pack installed by cloning into ``custom_nodes`` (ComfyUI-Manager, the registry) is not
    pip-installed, so its library is registered here under its package name from this folder. ``sys.path`` is
    not touched. An installed copy from this same folder (``pip install -e``) is used as it is; a copy installed
    from elsewhere is left alone with a warning, since the nodes were written against the bundled one.
    """
    bundled = os.path.join(_PACK_DIR, "vexpress_model", "__init__.py")
    if "vexpress_model" in sys.modules or not os.path.isfile(bundled):
        return
    try:
        spec = importlib.util.find_spec("vexpress_model")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        if os.path.realpath(os.path.dirname(spec.origin)) != os.path.realpath(os.path.dirname(bundled)):
            logger.warning(
                "V-Express: using the vexpress_model library installed at %s, not the copy bundled with this "
                "node pack (%s); reinstall it from this folder if the nodes misbehave",
                os.path.dirname(spec.origin),
                _PACK_DIR,
            )
        return
    spec = importlib.util.spec_from_file_location(
        "vexpress_model", bundled, submodule_search_locations=[os.path.dirname(bundled)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["vexpress_model"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("vexpress_model", None)
        raise


if __package__:  # imported as a package (ComfyUI, tests); a bare `python __init__.py` does nothing
    from .nodes import _comfy

    if _comfy.AVAILABLE:
        _ensure_library()
        from .nodes.extension import comfy_entrypoint  # noqa: F401

        __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
    elif _comfy.inside_comfyui():
        logger.error(
            "V-Express nodes need ComfyUI >= %s (the V3 node API, comfy_api.latest); this ComfyUI has none: %s. "
            "Update ComfyUI.",
            _comfy.MIN_COMFYUI,
            _comfy.IMPORT_ERROR,
        )
