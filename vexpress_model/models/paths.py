"""Finding the files of a V-Express model: the released ``model_ckpts/`` layout and ComfyUI-style folders.

(a) Released layout (docs/spec.md §2.1)::

    model_ckpts/stable-diffusion-v1-5/unet/config.json
    model_ckpts/sd-vae-ft-mse/{config.json, diffusion_pytorch_model.(safetensors|bin)}
    model_ckpts/wav2vec2-base-960h/{config.json, preprocessor_config.json, ...}
    model_ckpts/insightface_models/models/buffalo_l/*.onnx
    model_ckpts/v-express/{denoising_unet, reference_net, motion_module, v_kps_guider, audio_projection}.bin

(b) ComfyUI style: ``models/vexpress/`` holds the five files directly (optionally a UNet ``config.json`` or
``unet_config.json``; otherwise the SD-1.5 config shipped with this package is used), and the VAE, wav2vec2 and
insightface models are found in the community folders the caller passes (``models/vae/``,
``models/transformers/`` or ``models/audio_encoders/``, ``models/insightface/``; CONTRACT §1.4). Nothing here
imports ComfyUI.

(c) A ``git clone`` of ``tk93/V-Express``: the five files at the top of the clone, and a ``model_ckpts/`` tree
whose ``v-express/`` folder is empty. Each V-Express file is looked for in ``v-express/`` first, then in the folder
given; the sub-folders (VAE, wav2vec2, insightface, UNet config) are still found under ``model_ckpts/``.

Each weight file may be ``.safetensors``, ``.bin`` or the older ``.pth`` name (first found, in that order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelFolderError
from .config import SHIPPED_UNET_CONFIG

logger = logging.getLogger("vexpress.models")

VEXPRESS_FILES = ("denoising_unet", "reference_net", "motion_module", "v_kps_guider", "audio_projection")
VEXPRESS_SUFFIXES = (".safetensors", ".bin", ".pth")
VAE_WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin",
)
VAE_SINGLE_FILE_NAMES = ("sd-vae-ft-mse.safetensors", "sd-vae-ft-mse.bin", "sd-vae-ft-mse.pth")
WAV2VEC2_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
INSIGHTFACE_DETECTOR = Path("models") / "buffalo_l" / "det_10g.onnx"
HF_REPO = "https://huggingface.co/tk93/V-Express"


@dataclass(frozen=True)
class ModelPaths:
    """Where each part of a V-Express model is (``None``: not found; see ``searched`` for where we looked).

    ``vae`` is a diffusers folder (``config.json`` + weights) or a single diffusers-format weight file (then the
    sd-vae-ft-mse config shipped with the package is used); ``wav2vec2`` is a transformers folder;
    ``insightface_root`` is the folder that contains ``models/buffalo_l/``.
    """

    unet_config: Path
    denoising_unet: Path | None
    reference_net: Path | None
    motion_module: Path | None
    v_kps_guider: Path | None
    audio_projection: Path | None
    vexpress_config: Path | None = None
    vae: Path | None = None
    wav2vec2: Path | None = None
    insightface_root: Path | None = None
    layout: str = "custom"
    root: Path | None = None
    vexpress_dir: Path | None = None
    searched: dict[str, tuple[Path, ...]] = field(default_factory=dict, compare=False)

    @property
    def uses_shipped_unet_config(self) -> bool:
        return self.unet_config == SHIPPED_UNET_CONFIG

    def describe_missing(self, name: str) -> tuple[str, str]:
        """(what was not found and where we looked, how to fix it) for the part ``name``."""
        where = ", ".join(str(p) for p in self.searched.get(name, ())) or "nowhere"
        return f"{_DESCRIPTIONS[name]} not found (looked in: {where})", _FIXES[name]

    def missing(self, components: Iterable[str] | None = None) -> list[str]:
        """Human-readable lines for every required part that was not found."""
        wanted = list(components) if components is not None else [*VEXPRESS_FILES, "vae", "wav2vec2"]
        return ["; ".join(self.describe_missing(name)) for name in wanted if getattr(self, name) is None]

    def require(self, *components: str) -> None:
        """Raise :class:`ModelFolderError` listing every missing part among ``components`` (default: all)."""
        lines = self.missing(components or None)
        if lines:
            raise ModelFolderError("incomplete V-Express model folder: " + " | ".join(lines))


_DESCRIPTIONS = {
    **{name: f"{name} weights ({name}.bin)" for name in VEXPRESS_FILES},
    "vae": "the VAE sd-vae-ft-mse",
    "wav2vec2": "the audio encoder wav2vec2-base-960h",
    "insightface_root": "the insightface buffalo_l models",
}
_FIXES = {
    **{name: f"download {name}.bin from {HF_REPO} into the v-express folder" for name in VEXPRESS_FILES},
    "vae": "download the folder stabilityai/sd-vae-ft-mse (config.json + diffusion_pytorch_model.safetensors) "
    "into model_ckpts/sd-vae-ft-mse (ComfyUI: models/vae/sd-vae-ft-mse/)",
    "wav2vec2": "download the folder facebook/wav2vec2-base-960h into model_ckpts/wav2vec2-base-960h (ComfyUI: "
    "models/transformers/facebook/wav2vec2-base-960h/)",
    "insightface_root": "put the buffalo_l pack into model_ckpts/insightface_models/models/buffalo_l/ (ComfyUI: "
    "models/insightface/models/buffalo_l/)",
}


def _first_file(folder: Path, stems: Sequence[str], suffixes: Sequence[str]) -> Path | None:
    for stem in stems:
        for suffix in suffixes:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def find_weight_file(folder: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _vae_candidate(path: Path) -> Path | None:
    if path.is_file():
        return path
    if path.is_dir() and find_weight_file(path, VAE_WEIGHT_NAMES) is not None:
        return path
    return None


def _wav2vec2_candidate(path: Path) -> Path | None:
    if path.is_dir() and (path / "config.json").is_file() and find_weight_file(path, WAV2VEC2_WEIGHT_NAMES):
        return path
    return None


def _insightface_candidate(path: Path) -> Path | None:
    # Accept the root (holding models/buffalo_l), its models/ folder, or buffalo_l itself.
    for root in (path, path.parent, path.parent.parent):
        if (root / INSIGHTFACE_DETECTOR).is_file():
            return root
    return None


def _search(candidates: Sequence[Path], accept) -> tuple[Path | None, tuple[Path, ...]]:
    for candidate in candidates:
        found = accept(candidate)
        if found is not None:
            return found, tuple(candidates)
    return None, tuple(candidates)


def _as_paths(values: str | Path | Iterable[str | Path] | None) -> list[Path]:
    if values is None:
        return []
    if isinstance(values, (str, Path)):
        return [Path(values)]
    return [Path(v) for v in values]


def resolve_model_paths(
    model_dir: str | Path | None = None,
    *,
    vexpress_dir: str | Path | None = None,
    unet_config: str | Path | None = None,
    vae: str | Path | None = None,
    wav2vec2: str | Path | None = None,
    insightface_root: str | Path | None = None,
    vae_search_dirs: str | Path | Iterable[str | Path] | None = None,
    wav2vec2_search_dirs: str | Path | Iterable[str | Path] | None = None,
    insightface_search_dirs: str | Path | Iterable[str | Path] | None = None,
) -> ModelPaths:
    """Locate every part of a V-Express model. Never raises for missing parts (see :meth:`ModelPaths.require`).

    ``model_dir``: a released ``model_ckpts/`` folder, its parent, a HuggingFace clone of ``tk93/V-Express``, or a
    folder holding the five V-Express files directly (ComfyUI ``models/vexpress/``). The keyword paths override
    single parts; the ``*_search_dirs`` are community folders searched after ``model_dir`` (e.g. ComfyUI's
    ``models/vae``, ``models/transformers`` and ``models/audio_encoders``, ``models/insightface``).
    """
    given = Path(model_dir).expanduser() if model_dir is not None else None
    if given is not None and not given.is_dir():
        raise ModelFolderError(f"model folder not found: {given}")
    root = given
    if root is not None and not (root / "v-express").is_dir() and (root / "model_ckpts" / "v-express").is_dir():
        root = root / "model_ckpts"  # the folder that holds model_ckpts/ or an HF clone of tk93/V-Express
    # Folders searched for the five files, in order: the v-express/ folder of the released layout first, then the
    # folder given (a HuggingFace clone keeps the files at its top, next to an empty model_ckpts/v-express/; a
    # ComfyUI models/vexpress/ holds them directly).
    if vexpress_dir is not None:
        vx_dirs = [Path(vexpress_dir).expanduser()]
    elif root is not None and given is not None:
        vx_dirs = [root / "v-express", given]
        if not vx_dirs[0].is_dir() and _first_file(given, VEXPRESS_FILES, VEXPRESS_SUFFIXES) is not None:
            vx_dirs = [given]  # a flat folder: no v-express/ to mention
    else:
        vx_dirs = []

    searched: dict[str, tuple[Path, ...]] = {}
    files: dict[str, Path | None] = {}
    for name in VEXPRESS_FILES:
        files[name] = next((f for d in vx_dirs if (f := _first_file(d, (name,), VEXPRESS_SUFFIXES))), None)
        searched[name] = tuple(vx_dirs)
    found_in = [f.parent for f in files.values() if f is not None]
    if vexpress_dir is not None:
        vx_dir: Path | None = vx_dirs[0]
        layout = "custom"
    elif vx_dirs:
        # The folder holding most of the files found (first searched wins a tie), else where they belong; missing
        # files are downloaded there.
        vx_dir = max(vx_dirs, key=lambda d: (found_in.count(d), -vx_dirs.index(d))) if found_in else vx_dirs[0]
        layout = "released" if vx_dir.name == "v-express" and vx_dir != given else "flat"
    else:
        vx_dir, layout = None, "custom"
    # Folders that may hold the sub-folders of the released layout.
    bases: list[Path] = []
    for base in (root, given / "model_ckpts" if given else None, given, vx_dir.parent if vx_dir else None):
        if base is not None and base not in bases:
            bases.append(base)

    if unet_config is not None:
        unet_cfg = Path(unet_config).expanduser()
    else:
        candidates = [b / "stable-diffusion-v1-5" / "unet" / "config.json" for b in bases]
        for d in dict.fromkeys([*found_in, *vx_dirs]):
            candidates += [d / "unet_config.json", d / "config.json"]
        unet_cfg = next((c for c in candidates if c.is_file()), SHIPPED_UNET_CONFIG)
        if unet_cfg == SHIPPED_UNET_CONFIG:
            logger.debug("no SD-1.5 UNet config.json in the model folder; using the one shipped with the package")

    vexpress_config = next((c for d in dict.fromkeys([*found_in, *vx_dirs])
                            if (c := d / "vexpress_config.json").is_file()), None)

    vae_candidates = [Path(vae).expanduser()] if vae is not None else []
    vae_candidates += [b / "sd-vae-ft-mse" for b in bases]
    for d in _as_paths(vae_search_dirs):
        vae_candidates += [d / "sd-vae-ft-mse", d / "stabilityai" / "sd-vae-ft-mse"]
        vae_candidates += [d / name for name in VAE_SINGLE_FILE_NAMES]
    vae_path, searched["vae"] = _search(vae_candidates, _vae_candidate)

    w2v_candidates = [Path(wav2vec2).expanduser()] if wav2vec2 is not None else []
    w2v_candidates += [b / "wav2vec2-base-960h" for b in bases]
    for d in _as_paths(wav2vec2_search_dirs):
        w2v_candidates += [d / "facebook" / "wav2vec2-base-960h", d / "wav2vec2-base-960h"]
    w2v_path, searched["wav2vec2"] = _search(w2v_candidates, _wav2vec2_candidate)

    if_candidates = [Path(insightface_root).expanduser()] if insightface_root is not None else []
    if_candidates += [b / "insightface_models" for b in bases]
    if_candidates += _as_paths(insightface_search_dirs)
    if_path, searched["insightface_root"] = _search(if_candidates, _insightface_candidate)

    return ModelPaths(
        unet_config=unet_cfg,
        vexpress_config=vexpress_config,
        vae=vae_path,
        wav2vec2=w2v_path,
        insightface_root=if_path,
        layout=layout,
        root=root,
        vexpress_dir=vx_dir,
        searched=searched,
        **files,
    )
