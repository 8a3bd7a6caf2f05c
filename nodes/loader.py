"""``LoadVExpressModels``: a V-Express model folder -> every network under ComfyUI's memory management."""

from __future__ import annotations

import os

from ..vexpress_model.options import DTYPES
from . import _comfy, _types, folders
from ._comfy import io, marked_advanced
from ._texts import NodeTexts

CATEGORY = "V-Express/loaders"
DEFAULT_MODEL_NAME = "V-Express"
OFFLOAD_MODES = ("auto", "offload")
ROLES = ("vae", "audio_encoder", "reference_net", "denoising_unet", "kps_guider", "audio_projection")


def model_folder_options() -> list[str]:
    """Model folders found under the registered ``vexpress`` folders; the download target when there is none."""
    from ..vexpress_model.download import find_model_folders

    names = [name for name, _ in find_model_folders(folders.roots(folders.VEXPRESS))]
    return names or [DEFAULT_MODEL_NAME]


def _model_dir(name: str) -> str:
    from ..vexpress_model.download import find_model_folders

    for found, path in find_model_folders(folders.roots(folders.VEXPRESS)):
        if found == name:
            return str(path)
    roots = folders.roots(folders.VEXPRESS)
    return os.path.join(roots[0], name)


def _resolve(model_dir: str):
    from ..vexpress_model.models.paths import resolve_model_paths

    search = folders.model_search_roots()
    return resolve_model_paths(
        model_dir if os.path.isdir(model_dir) else None,
        vexpress_dir=None if os.path.isdir(model_dir) else model_dir,
        vae_search_dirs=search["vae"],
        wav2vec2_search_dirs=search["wav2vec2"],
        insightface_search_dirs=search["insightface"],
    )


def _auto_dtype():
    import torch

    mm = _comfy.model_management()
    device = mm.get_torch_device()
    if mm.should_use_fp16(device=device):
        return torch.float16
    if mm.should_use_bf16(device=device):
        return torch.bfloat16
    return torch.float32


class LoadVExpressModels(io.ComfyNode):
    """A V-Express model folder (downloaded on request) -> every network, under ComfyUI's model management."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = [
            io.Combo.Input("model", options=model_folder_options(), default=DEFAULT_MODEL_NAME),
            io.Combo.Input("dtype", options=list(DTYPES), default="auto"),
            marked_advanced(io.Combo.Input("offload", options=list(OFFLOAD_MODES), default="auto")),
            io.Boolean.Input("download_missing", default=False),
        ]
        outputs = [_types.PipeType.Output("pipe")]
        return NodeTexts("LoadVExpressModels", CATEGORY).schema(inputs, outputs)

    @classmethod
    def execute(cls, model: str, dtype: str, offload: str, download_missing: bool) -> io.NodeOutput:
        from ..vexpress_model.download import locate_or_download, plan_for_missing
        from ..vexpress_model.models.loading import load_vexpress_models, resolve_dtype
        from .memory_management import make_patchers
        from .progress import stage_progress

        model_dir = _model_dir(model)

        def plan_missing(paths):
            return plan_for_missing(
                paths,
                vexpress_dir=str(paths.vexpress_dir or model_dir),
                vae_dir=os.path.join(folders.roots(folders.VAE)[0], "sd-vae-ft-mse"),
                wav2vec2_dir=os.path.join(folders.roots(folders.TRANSFORMERS)[0], "facebook", "wav2vec2-base-960h"),
                insightface_root=folders.roots(folders.INSIGHTFACE)[0] if download_missing else None,
            )

        bars: list = []  # a progress bar only once a download runs

        def progress(done: int, total: int, _label: str) -> None:
            if not bars:
                bars.append(stage_progress(1000))
            bars[0](int(1000 * done / total) if total else 0)

        paths = locate_or_download(
            lambda: _resolve(model_dir),
            plan_missing,
            download=download_missing,
            progress=progress,
            hints=["Turn on download_missing to fetch them, or put each file at the path shown."],
        )

        torch_dtype = _auto_dtype() if dtype == "auto" else resolve_dtype(dtype)
        mm = _comfy.model_management()
        models = load_vexpress_models(paths, dtype=torch_dtype, device=mm.unet_offload_device())
        patchers = make_patchers(models, ROLES)
        _comfy.logger.info("V-Express: loaded %s (%s, offload=%s)", model_dir, torch_dtype, offload)
        pipe = _types.VExpressPipe(
            models=models,
            patchers=patchers,
            offload=offload == "offload",
            dtype=torch_dtype,
            model_dir=model_dir,
            paths=paths,
        )
        return io.NodeOutput(pipe)


NODES = [LoadVExpressModels]
