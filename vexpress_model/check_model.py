"""Will this V-Express model folder load? ``python -m vexpress_model.check_model --model_dir DIR``

Reports, per expected file: present or missing, size, dtype, and whether its keys and shapes agree with the
networks (checked against networks built on the meta device and the files' headers: no weights are loaded).
Exits 0 only if ``load_vexpress_models`` will accept the folder; the last line says what to fix.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .entry import CommandParser, run_command, with_defaults_in_help
from .errors import CheckpointMismatchError, ModelFolderError


@dataclass
class Entry:
    name: str
    status: str  # "ok" | "MISSING" | "BAD" | "warning"
    detail: str = ""
    fix: str = ""


@dataclass
class CheckResult:
    model_dir: Path | None
    layout: str = ""
    entries: list[Entry] = field(default_factory=list)

    @property
    def problems(self) -> list[Entry]:
        return [e for e in self.entries if e.status in ("MISSING", "BAD")]

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, name: str, status: str, detail: str = "", fix: str = "") -> None:
        self.entries.append(Entry(name, status, detail, fix))


def _size(path: Path) -> str:
    size = path.stat().st_size
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} B"


def _dtypes(state) -> str:
    names = sorted({str(d).replace("torch.", "") for d in state.dtypes() if d is not None})
    return "/".join(names) or "?"


def _rel(path: Path, base: Path | None) -> str:
    try:
        return str(path.relative_to(base)) if base is not None else str(path)
    except ValueError:
        return str(path)


def check_model_folder(
    model_dir: str | Path | None,
    **resolve_kwargs: object,
) -> CheckResult:
    """Check a model folder without loading weights; ``resolve_kwargs`` go to ``resolve_model_paths``."""
    from .models import loading
    from .models.checkpoint import Source, check_sources, open_checkpoint
    from .models.config import UNetConfig, VExpressConstants
    from .models.paths import (
        HF_REPO,
        VEXPRESS_FILES,
        WAV2VEC2_WEIGHT_NAMES,
        find_weight_file,
        resolve_model_paths,
    )

    result = CheckResult(Path(model_dir) if model_dir is not None else None)
    try:
        paths = resolve_model_paths(model_dir, **resolve_kwargs)  # type: ignore[arg-type]
    except ModelFolderError as exc:
        result.add("model folder", "MISSING", str(exc), "pass the folder that holds v-express/ (model_ckpts)")
        return result
    result.layout = {"released": "released layout (model_ckpts/)", "flat": "flat folder (ComfyUI models/vexpress)",
                     "custom": "individual paths"}.get(paths.layout, paths.layout)
    base = paths.root

    # -- sizes ---------------------------------------------------------------------------------------------------
    config = constants = None
    try:
        config = UNetConfig.from_json(paths.unet_config)
        source = "shipped with the package" if paths.uses_shipped_unet_config else _rel(paths.unet_config, base)
        result.add("UNet config", "ok", f"{source}: block widths {list(config.block_out_channels)}, "
                   f"cross-attention {config.cross_attention_dim}")
    except ModelFolderError as exc:
        result.add("UNet config", "BAD", str(exc), "re-download stable-diffusion-v1-5/unet/config.json or delete it")
    try:
        constants = VExpressConstants.from_json(paths.vexpress_config)
        if paths.vexpress_config is not None:
            note = f"{len(constants.overridden)} size constants for a non-standard model"
            result.add("vexpress_config.json", "ok", note)
    except ModelFolderError as exc:
        result.add("vexpress_config.json", "BAD", str(exc), "fix or delete v-express/vexpress_config.json")

    # -- the five V-Express files --------------------------------------------------------------------------------
    nets: dict[str, object] = {}
    if config is not None and constants is not None:
        nets = {
            "reference_net": loading.build_reference_net(config, constants),
            "denoising_unet": loading.build_denoising_unet(config, constants),
            "v_kps_guider": loading.build_kps_guider(constants),
            "audio_projection": loading.build_audio_projection(constants, config),
        }
        nets["motion_module"] = nets["denoising_unet"]
    for name in VEXPRESS_FILES:
        path = getattr(paths, name)
        label = f"v-express/{name}"
        if path is None:
            where = paths.vexpress_dir or "?"
            result.add(label, "MISSING", f"no {name}.bin/.safetensors/.pth in {where}",
                       f"download {name}.bin from {HF_REPO} into {where}")
            continue
        label = _rel(path, base)
        try:
            state = open_checkpoint(path, label)
        except ModelFolderError as exc:
            result.add(label, "BAD", str(exc), f"download {path.name} again from {HF_REPO}")
            continue
        info = f"{_size(path)}, {_dtypes(state)}, {len(state)} tensors"
        if name not in nets:
            result.add(label, "warning", info + "; keys not checked (the sizes above could not be read)")
            continue
        keys = loading.motion_module_keys(nets[name]) if name == "motion_module" else None  # type: ignore[arg-type]
        try:
            check_sources(nets[name], [Source(state, label, keys, path)], name)  # type: ignore[arg-type]
            result.add(label, "ok", info + ", keys and shapes match")
        except CheckpointMismatchError as exc:
            report = exc.report  # type: ignore[attr-defined]
            result.add(label, "BAD", info + f"; {report.summary()}: " + "; ".join(report.lines(3)),
                       f"download {path.name} again from {HF_REPO}" if name != "audio_projection" and
                       name != "v_kps_guider" else f"download {path.name} again (or fix vexpress_config.json)")

    if config is not None and constants is not None and \
            constants.kps_guider_conditioning_channels != config.block_out_channels[0]:
        result.add("vexpress_config.json", "BAD",
                   f"kps_guider_conditioning_channels {constants.kps_guider_conditioning_channels} differs from the "
                   f"UNet's first width {config.block_out_channels[0]}", "fix v-express/vexpress_config.json")

    # -- VAE -------------------------------------------------------------------------------------------------------
    if paths.vae is None:
        result.add("sd-vae-ft-mse", "MISSING", *paths.describe_missing("vae"))
    else:
        try:
            vae_config, weights = loading._vae_files(paths.vae)
            vae = loading.build_vae(vae_config)
            state = loading.open_vae_state(weights)
            label = _rel(weights, base)
            check_sources(vae, [Source(state, label, None, weights)], "VAE")
            result.add(label, "ok", f"{_size(weights)}, {_dtypes(state)}, {len(state)} tensors, keys and shapes match")
        except CheckpointMismatchError as exc:
            report = exc.report  # type: ignore[attr-defined]
            result.add(_rel(paths.vae, base), "BAD", f"{report.summary()}: " + "; ".join(report.lines(3)),
                       "download stabilityai/sd-vae-ft-mse again (diffusers format)")
        except ModelFolderError as exc:
            result.add(_rel(paths.vae, base), "BAD", str(exc), "download stabilityai/sd-vae-ft-mse again")

    # -- wav2vec2 --------------------------------------------------------------------------------------------------
    hidden = None
    if paths.wav2vec2 is None:
        result.add("wav2vec2-base-960h", "MISSING", *paths.describe_missing("wav2vec2"))
    else:
        folder = paths.wav2vec2
        weights = find_weight_file(folder, WAV2VEC2_WEIGHT_NAMES)
        try:
            encoder = loading.build_audio_encoder(folder)
            hidden = int(encoder.config.hidden_size)
            source = loading.audio_encoder_source(encoder, open_checkpoint(weights, weights.name))  # type: ignore
            label = _rel(weights, base)  # type: ignore[arg-type]
            check_sources(encoder, [source], "wav2vec2")
            result.add(label, "ok", f"{_size(weights)}, {_dtypes(source.state)}, {len(source.state)} tensors "
                       "(CTC head ignored), keys and shapes match")
        except CheckpointMismatchError as exc:
            report = exc.report  # type: ignore[attr-defined]
            result.add(_rel(folder, base), "BAD", f"{report.summary()}: " + "; ".join(report.lines(3)),
                       "download facebook/wav2vec2-base-960h again")
        except ModelFolderError as exc:
            result.add(_rel(folder, base), "BAD", str(exc), "download facebook/wav2vec2-base-960h again")
        if not (folder / "preprocessor_config.json").is_file():
            result.add(_rel(folder / "preprocessor_config.json", base), "warning",
                       "missing; the wav2vec2-base-960h defaults will be used")
    if hidden is not None and constants is not None and hidden != constants.audio_proj_inp_dim:
        result.add("wav2vec2 / audio projection", "BAD",
                   f"wav2vec2 width {hidden} but the audio projection expects {constants.audio_proj_inp_dim}",
                   "use wav2vec2-base-960h (or fix audio_proj_inp_dim in vexpress_config.json)")

    # -- insightface (not needed to load; needed to detect faces) ---------------------------------------------------
    from .inputs.face_mediapipe import mediapipe_available

    if paths.insightface_root is None and mediapipe_available():
        result.add("insightface buffalo_l", "ok",
                   "not found: faces are detected with MediaPipe (installed; --face_detector auto picks it)")
    elif paths.insightface_root is None:
        result.add("insightface buffalo_l", "warning",
                   "not found and MediaPipe is not installed: face detection (reference kps, kps extraction) will "
                   "not work; generation from given kps files will",
                   f"{paths.describe_missing('insightface_root')[1]}, or pip install mediapipe")
    else:
        result.add("insightface buffalo_l", "ok", str(paths.insightface_root / "models" / "buffalo_l"))
    return result


def format_result(result: CheckResult) -> str:
    lines = [f"V-Express model folder: {result.model_dir}" + (f" -- {result.layout}" if result.layout else "")]
    width = max((len(e.name) for e in result.entries), default=10)
    for entry in result.entries:
        tag = {"ok": "[ok]     ", "MISSING": "[MISSING]", "BAD": "[BAD]    ", "warning": "[warning]"}[entry.status]
        lines.append(f"  {tag} {entry.name:<{width}}  {entry.detail}")
    problems = result.problems
    warnings = [e for e in result.entries if e.status == "warning"]
    if problems:
        fixes = "; ".join(f"{e.name}: {e.fix}" for e in problems if e.fix)
        lines.append(f"NOT LOADABLE: {len(problems)} problem(s). To fix: {fixes}")
    else:
        extra = f" ({len(warnings)} warning(s): {'; '.join(e.name for e in warnings)})" if warnings else ""
        lines.append(f"OK: this folder will load{extra}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m vexpress_model.check_model",
        description="Will this V-Express model folder load? Lists every expected file (present or missing, size, "
                    "dtype, keys and shapes); exits 0 only if the folder will load.")
    parser.add_argument("--model_dir", default="./model_ckpts", help="model_ckpts/ (released layout) or a folder "
                        "with the five V-Express files (ComfyUI models/vexpress)")
    parser.add_argument("--vae", help="sd-vae-ft-mse folder or diffusers-format file (overrides the search)")
    parser.add_argument("--wav2vec2", help="wav2vec2-base-960h folder (overrides the search)")
    parser.add_argument("--insightface_root", help="folder that holds models/buffalo_l")
    parser.add_argument("--vae_search_dir", action="append", help="extra folder to search for the VAE")
    parser.add_argument("--wav2vec2_search_dir", action="append", help="extra folder to search for wav2vec2")
    parser.add_argument("--insightface_search_dir", action="append", help="extra folder to search for insightface")
    args = with_defaults_in_help(parser).parse_args(argv)

    def work() -> int:
        result = check_model_folder(
            args.model_dir,
            vae=args.vae,
            wav2vec2=args.wav2vec2,
            insightface_root=args.insightface_root,
            vae_search_dirs=args.vae_search_dir,
            wav2vec2_search_dirs=args.wav2vec2_search_dir,
            insightface_search_dirs=args.insightface_search_dir,
        )
        print(format_result(result))
        return 0 if result.ok else 1

    return run_command(work, log_level=logging.WARNING, log_format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
