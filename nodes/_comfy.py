"""The one module of the pack that imports ComfyUI.

Every other node module takes ComfyUI's API from here, so pinning a versioned API later (``comfy_api.v0_0_2``
instead of ``comfy_api.latest``) is a one-line change, and the pack can be imported outside ComfyUI (library
tests, linters): ``AVAILABLE`` is then False and nothing else in ``nodes/`` should be imported.

Only what every ComfyUI process has already imported at start-up is imported at module level (``comfy_api``,
``folder_paths``). ``comfy.model_management``, ``comfy.model_patcher`` and ``comfy.utils`` are reached through
the small accessor functions below, so importing the pack probes no device.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("vexpress.nodes")

# Oldest ComfyUI the pack is tested against (pyproject.toml [tool.comfy] requires-comfyui).
MIN_COMFYUI = "0.3.64"

try:  # pragma: no cover - exercised by the ComfyUI tests
    import folder_paths
    from comfy_api.latest import ComfyExtension, InputImpl, Types, io, ui

    AVAILABLE = True
    IMPORT_ERROR: BaseException | None = None
except ImportError as exc:  # outside ComfyUI, or a ComfyUI older than the V3 node API
    AVAILABLE = False
    IMPORT_ERROR = exc
    ComfyExtension = io = ui = InputImpl = Types = folder_paths = None  # type: ignore[assignment]


def schema_has(field: str) -> bool:
    """Whether this ComfyUI's ``io.Schema`` takes ``field`` (``search_aliases`` came after 0.3.64)."""
    import dataclasses

    return any(item.name == field for item in dataclasses.fields(io.Schema))


def marked_advanced(item):
    """``item`` (a widget input) shown under the node's "advanced" inputs where this ComfyUI has them (0.33 does,
    0.3.64 does not: there the input stays as it was, so the schema loads without a warning)."""
    import inspect

    if "advanced" in inspect.signature(io.Input.__init__).parameters:
        item.advanced = True
    return item


def inside_comfyui() -> bool:
    """True when ComfyUI itself is importable, whether or not its node API is new enough."""
    import importlib.util

    try:
        return importlib.util.find_spec("comfy") is not None and importlib.util.find_spec("folder_paths") is not None
    except (ImportError, ValueError):
        return False


def model_management():
    """``comfy.model_management`` (imported on first use)."""
    import comfy.model_management

    return comfy.model_management


def model_patcher():
    """``comfy.model_patcher`` (imported on first use)."""
    import comfy.model_patcher

    return comfy.model_patcher


def comfy_utils():
    """``comfy.utils`` (ProgressBar), imported on first use."""
    import comfy.utils

    return comfy.utils


def latent_preview():
    """(``latent_preview``, ``comfy.latent_formats``): ComfyUI's latent previewers and latent formats."""
    import comfy.latent_formats
    import latent_preview as previews

    return previews, comfy.latent_formats


def cli_args():
    """ComfyUI's parsed command line (``--disable-metadata``, ``--preview-size`` ...)."""
    from comfy.cli_args import args

    return args
