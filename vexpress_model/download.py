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

import contextlib
import importlib
import inspect
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MissingModelFilesError
from .models.paths import VEXPRESS_FILES

logger = logging.getLogger("vexpress.download")

VEXPRESS_REPO = "tk93/V-Express"
VAE_REPO = "stabilityai/sd-vae-ft-mse"
WAV2VEC2_REPO = "facebook/wav2vec2-base-960h"

ProgressFn = Callable[[int, int, str], None]
"""``progress(done_bytes, total_bytes, file_label)`` while a file downloads (total 0 when unknown)."""


# Approximate sizes, for the table of missing files (the checkpoints' from their element counts in fp16).
APPROXIMATE_SIZES = {
    "denoising_unet.bin": "2.7 GB",
    "reference_net.bin": "1.7 GB",
    "motion_module.bin": "0.9 GB",
    "audio_projection.bin": "59 MB",
    "v_kps_guider.bin": "2 MB",
    "diffusion_pytorch_model.safetensors": "335 MB",
    "model.safetensors": "378 MB",
    "det_10g.onnx": "17 MB",
}


@dataclass(frozen=True)
class RemoteFile:
    """One file of a HuggingFace model repository."""

    repo_id: str
    path: str
    revision: str = "main"

    @property
    def approximate_size(self) -> str:
        return APPROXIMATE_SIZES.get(Path(self.path).name, "< 1 MB")

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


# ------------------------------------------------------------------------------------------ the whole loop


def released_layout_hints(model_ckpts: Path | str) -> list[str]:
    """The other ways to get the files of the released layout (the README's one-command recipe) and the flags."""
    root = Path(model_ckpts)
    return [
        # Copied into the folder, not moved onto its name: "mv V-Express/model_ckpts ROOT" nests the tree as
        # ROOT/model_ckpts when ROOT exists already (as it does once a download has started); -n keeps its files.
        "Or get them all with one command (needs git-lfs, about 6 GB): git clone https://huggingface.co/tk93/V-Express"
        f" && mkdir -p {root}/v-express && cp -Rn V-Express/model_ckpts/. {root}/ && cp -n V-Express/*.bin "
        f"{root}/v-express/",
        "--no_download never downloads; `python -m vexpress_model.check_model --model_dir "
        f"{root}` checks what a folder holds.",
    ]


def locate_or_download(
    resolve: Callable[[], Any],
    plan_missing: Callable[[Any], list[PlannedFile]],
    *,
    download: bool,
    progress: ProgressFn | None = None,
    hints: Sequence[str] = (),
) -> Any:
    """The model files of a front end: resolve -> plan what is missing -> download it -> resolve again.

    ``resolve()`` returns a ``models.paths.ModelPaths``; ``plan_missing(paths)`` the files to fetch for the
    parts it lacks (the destinations are the front end's layout). Raises :class:`MissingModelFilesError` when
    files are missing and not downloaded, and ``ModelFolderError`` when a part is still incomplete.
    """
    paths = resolve()
    plan = plan_missing(paths)
    if plan:
        ensure_files(plan, download=download, progress=progress, hints=hints)
        paths = resolve()
    paths.require()
    return paths


# ------------------------------------------------------------------------------------------------ checking


def missing_files(plan: Iterable[PlannedFile]) -> list[PlannedFile]:
    return [item for item in plan if not item.present()]


def describe_missing(missing: Sequence[PlannedFile]) -> str:
    """A table of the missing files (name, approximate size, where it goes) and the repositories they come from."""
    rows = [("file", "size", "goes to")]
    rows += [(Path(item.remote.path).name, item.remote.approximate_size, str(item.dest)) for item in missing]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    table = [f"  {name.ljust(widths[0])}  {size.ljust(widths[1])}  {dest}" for name, size, dest in rows]
    sources = sorted({item.remote.repo_id for item in missing})
    return "\n".join([*table, "  from https://huggingface.co/: " + ", ".join(sources)])


def _missing_message(headline: str, missing: Sequence[PlannedFile], hints: Sequence[str]) -> str:
    return "\n".join([headline, describe_missing(missing), *hints])


def ensure_files(
    plan: Sequence[PlannedFile],
    *,
    download: bool = False,
    progress: ProgressFn | None = None,
    token: str | bool | None = None,
    hints: Sequence[str] = (),
) -> list[Path]:
    """Make sure every planned file is present; returns the paths downloaded (empty when nothing was missing).

    With ``download=False`` a missing file raises :class:`MissingModelFilesError`: a table of what goes where,
    then ``hints`` (the caller's other ways to get the files). With ``download=True`` exactly the missing files are
    fetched with ``huggingface_hub`` (one log line per file, console progress bars, and ``progress`` if given),
    each written under a temporary name beside its destination and renamed when complete; huggingface_hub's retry
    warnings are counted and summarised in one line per file. A failed download (offline, no access) raises
    :class:`MissingModelFilesError` naming every file still missing, and removes the folders it created for them.
    """
    missing = missing_files(plan)
    if not missing:
        return []
    if not download:
        raise MissingModelFilesError(_missing_message(
            f"{len(missing)} V-Express model file(s) are missing and downloading is off:", missing, hints))
    try:
        import huggingface_hub
    except ImportError:
        raise MissingModelFilesError(_missing_message(
            f"{len(missing)} V-Express model file(s) are missing; downloading them needs the huggingface_hub "
            "package (pip install huggingface_hub), or get them yourself:", missing, hints)) from None

    fetched: list[Path] = []
    created: list[Path] = []
    for index, item in enumerate(missing):
        label = f"{item.remote.repo_id}/{item.remote.path}"
        logger.info("downloading %s (%s) -> %s [%d/%d]", label, item.remote.approximate_size, item.dest,
                    index + 1, len(missing))
        try:
            created += _make_folders(item.dest.parent)
            retries: list[logging.LogRecord] = []
            try:
                with _counted_retries(retries):
                    _download_one(huggingface_hub, item, progress, label, token)
            finally:
                if retries:
                    logger.info("%s: %d retr%s", label, len(retries), "y" if len(retries) == 1 else "ies")
        except Exception as error:
            if getattr(error, "_from_progress_callback", False):
                _remove_empty(created)
                raise  # e.g. a cancel raised by the caller's progress display: not a download failure
            _remove_empty(created)
            reason = _failure_reason(huggingface_hub, error)
            still = missing_files(plan)
            raise MissingModelFilesError(_missing_message(
                f"could not download {label} ({_shorten(reason)}); {len(still)} model file(s) are still missing:",
                still, hints)) from None
        fetched.append(item.dest)
    return fetched


def _failure_reason(hub: Any, error: BaseException) -> str:
    """Why a download failed, in words: huggingface_hub reports an unreachable server (offline, no DNS, a proxy)
    as ``LocalEntryNotFoundError`` with a paragraph about its cache; the user needs to hear "cannot reach"."""
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    names = {type(item).__name__ for item in chain}
    if names & {"LocalEntryNotFoundError", "ConnectionError", "ConnectError", "ConnectTimeout", "gaierror"}:
        endpoint = getattr(getattr(hub, "constants", None), "ENDPOINT", "https://huggingface.co")
        return f"cannot reach {endpoint}: no internet connection?"
    return " ".join(f"{type(error).__name__}: {error}".split())


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the folders this created, outermost first."""
    new = [path for path in (folder, *folder.parents) if not path.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return new


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove the folders a failed download created, innermost first, as long as they are empty."""
    for folder in sorted(set(folders), key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()


class _RetryCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _counted_retries(retries: list[logging.LogRecord]):
    """Route huggingface_hub's log records into a list while a file downloads (its retry warnings would
    otherwise print once per try, and twice when both its handler and the root handler print them); records
    that are not about retrying are passed on as warnings of our logger."""
    with contextlib.suppress(ImportError):
        # huggingface_hub adds its own stderr handler when its logging module is first imported, which can happen
        # inside the download: import it now, so that the handler swapped out below is that one.
        importlib.import_module("huggingface_hub.utils.logging")
    hub_logger = logging.getLogger("huggingface_hub")
    counter = _RetryCounter()
    saved = hub_logger.handlers[:], hub_logger.propagate
    hub_logger.handlers, hub_logger.propagate = [counter], False
    try:
        yield
    finally:
        hub_logger.handlers, hub_logger.propagate = saved
        for record in counter.records:
            message = record.getMessage()
            if "thrown while requesting" in message:
                continue  # the reason of the retry that follows; the last one ends up in the error message
            if "retr" in message.lower():
                retries.append(record)
            elif record.levelno >= logging.WARNING:
                logger.warning("huggingface_hub: %s", record.getMessage())


def _download_one(hub, item: PlannedFile, progress: ProgressFn | None, label: str, token) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vexpress_model.download [--model_dir DIR]``: fetch the released weights before a first run (the
    main command does the same on first use), exactly the files that are missing."""
    from .entry import CommandParser, run_command, with_defaults_in_help

    parser = CommandParser(prog="python -m vexpress_model.download", description="Download the released V-Express "
                           "weights into a model folder (only the files that are missing; the main command does "
                           "the same on first use).")
    parser.add_argument("--model_dir", default="./model_ckpts",
                        help="where to put them, in the released layout")
    parser.add_argument("--insightface", action="store_true",
                        help="also insightface's face detector det_10g.onnx (the original's; without it MediaPipe "
                             "detects faces, when installed)")
    args = with_defaults_in_help(parser).parse_args(argv)

    def work() -> None:
        root = Path(args.model_dir)
        fetched = ensure_files(released_layout_plan(root, face_detector=args.insightface), download=True,
                               hints=released_layout_hints(root)[:1])
        print(f"downloaded {len(fetched)} file(s) into {root}" if fetched else f"{root} already holds every file")

    return run_command(work)


if __name__ == "__main__":
    import sys

    sys.exit(main())
