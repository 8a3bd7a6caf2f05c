"""Model folders of the pack, registered with ComfyUI's ``folder_paths``.

================== ===================================== ===============================================================
key                default folder                        holds
================== ===================================== ===============================================================
``vexpress``       ``models/vexpress/``                  one sub-folder per V-Express model (the five ``.bin``)
``vae``            ``models/vae/`` (core)                ``sd-vae-ft-mse/`` (diffusers folder)
``transformers``   ``models/transformers/``              ``facebook/wav2vec2-base-960h/`` (the path other packs use)
``audio_encoders`` ``models/audio_encoders/`` (core)     ``wav2vec2-base-960h/`` (also looked for here)
``insightface``    ``models/insightface/``               ``models/buffalo_l/det_10g.onnx`` (shared with IPAdapter,
                                                         InstantID, PuLID, LivePortrait)
================== ===================================== ===============================================================

Keys that ``extra_model_paths.yaml`` already defines keep their paths (ComfyUI reads that file before it loads
custom nodes); the default folder is only added to them. Registration only edits ``folder_paths``' table: no
folder is created, scanned or read at import time.
"""

from __future__ import annotations

import os

from . import _comfy

VEXPRESS = "vexpress"
VAE = "vae"
TRANSFORMERS = "transformers"
AUDIO_ENCODERS = "audio_encoders"
INSIGHTFACE = "insightface"

_DEFAULT_SUBDIRS = {
    VEXPRESS: "vexpress",
    VAE: "vae",
    TRANSFORMERS: "transformers",
    AUDIO_ENCODERS: "audio_encoders",
    INSIGHTFACE: "insightface",
}


def register() -> None:
    """Add the pack's keys to ``folder_paths`` (idempotent; keeps paths from extra_model_paths.yaml)."""
    folder_paths = _comfy.folder_paths
    for key, subdir in _DEFAULT_SUBDIRS.items():
        default = os.path.join(folder_paths.models_dir, subdir)
        existing = folder_paths.folder_names_and_paths.get(key)
        if existing is not None and default in existing[0]:
            continue
        # Appends to a key registered by the core or extra_model_paths.yaml, or creates it (listing every file).
        folder_paths.add_model_folder_path(key, default)


def roots(key: str) -> list[str]:
    """The registered folders of ``key`` (empty when nothing registered it)."""
    try:
        return list(_comfy.folder_paths.get_folder_paths(key))
    except KeyError:
        return []


def model_search_roots() -> dict[str, list[str]]:
    """Everything the model loader may look in, by component (for ``vexpress_model.download`` / the loader)."""
    return {
        "vexpress": roots(VEXPRESS),
        "vae": roots(VAE),
        "wav2vec2": (
            [os.path.join(r, "facebook") for r in roots(TRANSFORMERS)] + roots(TRANSFORMERS) + roots(AUDIO_ENCODERS)
        ),
        "insightface": roots(INSIGHTFACE),
    }
