"""ComfyUI's progress bar, latent preview and cancel behind the library's ``Hooks`` callbacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _comfy
from .memory_management import compute_device

logger = _comfy.logger


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
