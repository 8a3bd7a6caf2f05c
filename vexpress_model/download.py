"""Which weight files V-Express needs, where they come from, and an opt-in download of exactly those files.

Nothing here runs at import time and nothing is downloaded unless a caller asks for it (``ensure_files(...,
download=True)``). Sources (HuggingFace):

* ``tk93/V-Express`` -- the five V-Express checkpoints (at the repository's top level), the SD-1.5 UNet config
  and the insightface face detector ``det_10g.onnx`` (the only file of the ``buffalo_l`` pack that is used);
* ``stabilityai/sd-vae-ft-mse`` -- the VAE (``config.json`` + safetensors weights);
* ``facebook/wav2vec2-base-960h`` -- the audio encoder (``config.json``, ``preprocessor_config.json`` and the
  safetensors weights; the CTC tokenizer files are not needed).

Two layouts are planned here: the released ``model_ckpts/`` layout of the original repository (command line) and
the ComfyUI layout, where the shared networks sit in the community folders (``models/vae``,
``models/transformers/facebook``, ``models/insightface``) so that other node packs find them too. A plan lists
each file with its destination and the other names that count as present (``.pth`` for ``.bin``, ``.bin`` for
``.safetensors``). When a file is missing and downloading is off or fails (offline), the error lists every missing
file with its URL and the exact path to put it at.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelFolderError
from .models.paths import VEXPRESS_FILES

logger = logging.getLogger("vexpress.download")

VEXPRESS_REPO = "tk93/V-Express"
VAE_REPO = "stabilityai/sd-vae-ft-mse"
WAV2VEC2_REPO = "facebook/wav2vec2-base-960h"

ProgressFn = Callable[[int, int, str], None]
"""``progress(done_bytes, total_bytes, file_label)`` while a file downloads (total 0 when unknown)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a HuggingFace model repository."""

    repo_id: str
    path: str
    revision: str = "main"

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/{self.revision}/{self.path}"


@dataclass(frozen=True)
class PlannedFile:
    """A needed file: where it comes from, where it goes, and which other files in that folder stand in for it."""

    remote: RemoteFile
    dest: Path
    also_accepted: tuple[str, ...] = field(default_factory=tuple)

    def present(self) -> bool:
        if self.dest.is_file():
            return True
        return any((self.dest.parent / name).is_file() for name in self.also_accepted)


# ------------------------------------------------------------------------------------------------ file lists


def checkpoint_files(folder: Path | str) -> list[PlannedFile]:
    """The five V-Express checkpoints, as ``<folder>/<name>.bin`` (``<name>.pth``, the pre-June-2024 name, also
    counts)."""
    folder = Path(folder)
    return [
        PlannedFile(RemoteFile(VEXPRESS_REPO, f"{name}.bin"), folder / f"{name}.bin", (f"{name}.pth",))
        for name in VEXPRESS_FILES
    ]


def unet_config_file(dest: Path | str) -> PlannedFile:
    """The SD-1.5 UNet ``config.json`` (architecture of both UNets), from the V-Express repository."""
    return PlannedFile(RemoteFile(VEXPRESS_REPO, "model_ckpts/stable-diffusion-v1-5/unet/config.json"), Path(dest))


def vae_files(folder: Path | str) -> list[PlannedFile]:
    """``sd-vae-ft-mse`` as a diffusers folder (safetensors weights; an existing ``.bin`` also counts)."""
    folder = Path(folder)
    return [
        PlannedFile(RemoteFile(VAE_REPO, "config.json"), folder / "config.json"),
        PlannedFile(
            RemoteFile(VAE_REPO, "diffusion_pytorch_model.safetensors"),
            folder / "diffusion_pytorch_model.safetensors",
            ("diffusion_pytorch_model.bin",),
        ),
    ]


def wav2vec2_files(folder: Path | str) -> list[PlannedFile]:
    """``wav2vec2-base-960h``: config, feature-extractor config and weights (an existing ``pytorch_model.bin``
    also counts)."""
    folder = Path(folder)
    return [
        PlannedFile(RemoteFile(WAV2VEC2_REPO, "config.json"), folder / "config.json"),
        PlannedFile(RemoteFile(WAV2VEC2_REPO, "preprocessor_config.json"), folder / "preprocessor_config.json"),
        PlannedFile(
            RemoteFile(WAV2VEC2_REPO, "model.safetensors"), folder / "model.safetensors", ("pytorch_model.bin",)
        ),
    ]


def detector_file(insightface_root: Path | str) -> PlannedFile:
    """The insightface detector ``det_10g.onnx`` at ``<root>/models/buffalo_l/`` (where ``FaceAnalysis(root=...)``
    looks for the ``buffalo_l`` pack)."""
    return PlannedFile(
        RemoteFile(VEXPRESS_REPO, "model_ckpts/insightface_models/models/buffalo_l/det_10g.onnx"),
        Path(insightface_root) / "models" / "buffalo_l" / "det_10g.onnx",
    )


def released_layout_plan(model_ckpts: Path | str, *, face_detector: bool = True) -> list[PlannedFile]:
    """Every file of the original repository's ``model_ckpts/`` layout (docs/spec.md §2.1) that inference reads."""
    root = Path(model_ckpts)
    plan = checkpoint_files(root / "v-express")
    plan.append(unet_config_file(root / "stable-diffusion-v1-5" / "unet" / "config.json"))
    plan += vae_files(root / "sd-vae-ft-mse")
    plan += wav2vec2_files(root / "wav2vec2-base-960h")
    if face_detector:
        plan.append(detector_file(root / "insightface_models"))
    return plan


def comfyui_layout_plan(
    model_dir: Path | str,
    *,
    vae_dir: Path | str | None = None,
    wav2vec2_dir: Path | str | None = None,
    insightface_root: Path | str | None = None,
) -> list[PlannedFile]:
    """The ComfyUI layout: the five checkpoints in ``model_dir`` (``models/vexpress/<name>/``; the SD-1.5 UNet config
    shipped with the package is used), the shared networks in the given community folders (each left out when
    None)."""
    plan = checkpoint_files(model_dir)
    if vae_dir is not None:
        plan += vae_files(vae_dir)
    if wav2vec2_dir is not None:
        plan += wav2vec2_files(wav2vec2_dir)
    if insightface_root is not None:
        plan.append(detector_file(insightface_root))
    return plan


def plan_for_missing(
    paths,
    *,
    vexpress_dir: Path | str,
    vae_dir: Path | str,
    wav2vec2_dir: Path | str,
    insightface_root: Path | str | None = None,
) -> list[PlannedFile]:
    """The files to fetch for the parts a ``models.paths.ModelPaths`` did not find, at the given destinations.

    Parts found anywhere (the model folder or a community folder) are not planned again, so a VAE or wav2vec2 that
    another node pack already downloaded is reused. ``insightface_root`` None leaves the face detector out.
    """
    plan: list[PlannedFile] = []
    if any(getattr(paths, name) is None for name in VEXPRESS_FILES):
        plan += [item for item in checkpoint_files(vexpress_dir) if not item.present()]
    if paths.vae is None:
        plan += vae_files(vae_dir)
    if paths.wav2vec2 is None:
        plan += wav2vec2_files(wav2vec2_dir)
    if insightface_root is not None and paths.insightface_root is None:
        plan.append(detector_file(insightface_root))
    return [item for item in plan if not item.present()]


def find_model_folders(roots: Iterable[Path | str], max_depth: int = 2) -> list[tuple[str, Path]]:
    """V-Express model folders under ``roots``: ``(name, path)`` with ``name`` relative to its root ("." for a root
    that holds the checkpoints itself), for a folder that holds ``denoising_unet.*`` directly, in ``v-express/``
    or in ``model_ckpts/v-express/`` (the layouts ``models.paths.resolve_model_paths`` accepts). Sub-folders of a
    found folder are not searched; hidden folders are skipped. Sorted by name, first root first on a clash."""
    found: dict[str, Path] = {}

    def holds_model(folder: Path) -> bool:
        return any(
            any((base / f"denoising_unet{suffix}").is_file() for suffix in (".safetensors", ".bin", ".pth"))
            for base in (folder, folder / "v-express", folder / "model_ckpts" / "v-express")
        )

    def walk(root: Path, folder: Path, depth: int) -> None:
        if holds_model(folder):
            name = folder.relative_to(root).as_posix() or "."
            found.setdefault(name, folder)
            return
        if depth >= max_depth:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            walk(root, child, depth + 1)

    for root in roots:
        root = Path(root)
        if root.is_dir():
            walk(root, root, 0)
    return sorted(found.items())


# ------------------------------------------------------------------------------------------------ checking


def missing_files(plan: Iterable[PlannedFile]) -> list[PlannedFile]:
    return [item for item in plan if not item.present()]


def describe_missing(missing: Sequence[PlannedFile]) -> str:
    """One line per missing file: its URL and the exact path to put it at."""
    return "\n".join(f"  {item.remote.url}\n    -> {item.dest}" for item in missing)


def ensure_files(
    plan: Sequence[PlannedFile],
    *,
    download: bool = False,
    progress: ProgressFn | None = None,
    token: str | bool | None = None,
) -> list[Path]:
    """Make sure every planned file is present; returns the paths downloaded (empty when nothing was missing).

    With ``download=False`` a missing file raises :class:`ModelFolderError` listing what goes where. With
    ``download=True`` exactly the missing files are fetched with ``huggingface_hub`` (console progress bars, and
    ``progress`` if given), each written under a temporary name beside its destination and renamed when complete.
    A failed download (offline, no access) raises :class:`ModelFolderError` naming every file still missing.
    """
    missing = missing_files(plan)
    if not missing:
        return []
    if not download:
        raise ModelFolderError(
            f"{len(missing)} V-Express model file(s) are missing. Download them (or enable the download option) "
            f"and put each at the path shown:\n{describe_missing(missing)}"
        )
    try:
        import huggingface_hub
    except ImportError as error:
        raise ModelFolderError(
            "downloading the V-Express weights needs the huggingface_hub package (pip install huggingface_hub); "
            f"or download these files yourself and put each at the path shown:\n{describe_missing(missing)}"
        ) from error

    fetched: list[Path] = []
    for index, item in enumerate(missing):
        label = f"{item.remote.repo_id}/{item.remote.path}"
        logger.info("downloading %s -> %s (%d of %d)", label, item.dest, index + 1, len(missing))
        try:
            _download_one(huggingface_hub, item, progress, label, token)
        except Exception as error:
            if getattr(error, "_from_progress_callback", False):
                raise  # e.g. a cancel raised by the caller's progress display: not a download failure
            still = missing_files(plan)
            raise ModelFolderError(
                f"could not download {label} ({type(error).__name__}: {error}). If this machine is offline, "
                f"download these files elsewhere and put each at the path shown:\n{describe_missing(still)}"
            ) from error
        fetched.append(item.dest)
    return fetched


def _download_one(hub, item: PlannedFile, progress: ProgressFn | None, label: str, token) -> None:
    item.dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".vexpress-download-", dir=item.dest.parent))
    try:
        kwargs = {"revision": item.remote.revision, "local_dir": str(staging)}
        if token is not None:
            kwargs["token"] = token
        if progress is not None and "tqdm_class" in inspect.signature(hub.hf_hub_download).parameters:
            kwargs["tqdm_class"] = _progress_tqdm(progress, label)
        downloaded = Path(hub.hf_hub_download(item.remote.repo_id, item.remote.path, **kwargs))
        os.replace(downloaded, item.dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _progress_tqdm(progress: ProgressFn, label: str):
    """A tqdm class that also reports to ``progress`` (huggingface_hub drives it with byte counts)."""
    from tqdm.auto import tqdm

    class _Reporting(tqdm):  # type: ignore[misc, valid-type]
        def update(self, n=1):
            result = super().update(n)
            # Counted here too: a disabled bar (HF_HUB_DISABLE_PROGRESS_BARS, no terminal) does not count.
            self._vexpress_done = getattr(self, "_vexpress_done", 0) + int(n or 0)
            try:
                progress(self._vexpress_done, int(self.total or 0), label)
            except Exception as error:
                error._from_progress_callback = True  # type: ignore[attr-defined]
                raise
            return result

    return _Reporting
