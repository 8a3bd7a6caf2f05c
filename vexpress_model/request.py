"""What one generation asks for: :class:`GenerationRequest`, and the command line's flags turned into one.

The command line, the batch runner (one request per job) and library callers build requests; :mod:`.generate`
runs them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conditioning.face_crop import DEFAULT_CROP_SCALE
from .errors import InputError
from .models.paths import VEXPRESS_FILES
from .options import SCHEDULERS, SPEED_PRESETS, check_choice
from .outputs.paste_back import DEFAULT_COLOR_MATCH, DEFAULT_FEATHER
from .pipeline.speed_presets import speed_values
from .validation import MAX_CRF, require_fraction, require_whole_number

logger = logging.getLogger("vexpress.generate")


@dataclass
class GenerationRequest:
    """Everything one generation needs; the defaults are the user manual's."""

    reference_image: Path
    audio: Path
    output: Path
    model_dir: Path | None = Path("./model_ckpts")
    # Single-part overrides (None: found under model_dir): unet_config, vae, wav2vec2, insightface_root and the
    # five checkpoint files by their ModelPaths names.
    path_overrides: dict[str, Path] = field(default_factory=dict)
    kps_path: Path | None = None
    reference_kps_path: Path | None = None
    # "output": pixels of the width x height frame; "image": the reference image's own (always with full_frame)
    reference_kps_space: str = "output"
    retarget_strategy: str = "no_retarget"
    width: int = 512
    height: int = 512
    fps: float = 30.0
    seed: int = 42
    num_inference_steps: int | None = None  # None: the speed preset's (25 for exact)
    guidance_scale: float = 3.5
    context_frames: int = 24
    context_overlap: int = 4
    # Fast modes (docs/speed.md): a preset, and explicit values overriding it (None: the preset's).
    speed: str = "exact"
    scheduler: str | None = None
    cache_interval: int | None = None
    cache_branch: int | None = None
    cfg_end: float | None = None
    reference_attention_weight: float = 1.0
    audio_attention_weight: float = 1.0
    num_pad_audio_frames: int = 2
    test_stage: str = "stage_3"
    compat: str = "fixed"
    median_filter: bool | None = None  # None: outputs.median_filter.median_filter_enabled (on in compat original)
    crf: int = 17
    device: str = "auto"
    gpu_id: int = 0
    dtype: str = "auto"
    offload: bool = False
    window_batch_size: int | None = None
    compile_unet: bool = False
    download: bool = True
    dump_dir: Path | None = None
    show_progress: bool = True
    face_detector: str = "auto"  # auto, insightface or mediapipe (inputs/face_backends.py)
    # Hide MediaPipe's native log lines (inputs/face_mediapipe.py): the command lines set it unless --verbose; never
    # inside ComfyUI, whose process shares file descriptor 2.
    quiet_native_logs: bool = False
    # Full-frame mode: the face is cut out of the reference image, generated at width x height and pasted back
    # into the full-resolution image (conditioning/face_crop.py, outputs/paste_back.py). reference_kps_path and
    # face_box are then in the reference image's own pixels.
    full_frame: bool = False
    face_box: tuple[float, float, float, float] | None = None
    crop_scale: float = DEFAULT_CROP_SCALE
    crop_border: str = "pad"
    feather: float = DEFAULT_FEATHER
    color_match: str = DEFAULT_COLOR_MATCH
    max_side: int | None = None

    def __post_init__(self) -> None:
        # Library callers write paths as strings too (GenerationRequest(reference_image="ref.jpg", ...)): the fields
        # are Paths for everything downstream.
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)) and not isinstance(value, Path):
                setattr(self, name, Path(value))
        self.path_overrides = {name: Path(value) for name, value in self.path_overrides.items()}
        self._check_ranges()

    def _check_ranges(self) -> None:
        """The ranges the command line's parser checks (cli.py), for library callers too: one line naming the
        field, at construction."""
        require_whole_number(self.crf, "GenerationRequest crf", 0, MAX_CRF, " (H.264 quality)")
        require_whole_number(self.gpu_id, "GenerationRequest gpu_id", 0)
        for name, meaning in (("window_batch_size", "context windows per UNet call; None: as many as the memory "
                                                    "budget allows"),
                              ("max_side", "pixels of the output's longer side; None: keep the size")):
            value = getattr(self, name)
            if value is not None:
                require_whole_number(value, f"GenerationRequest {name}", 1, why=f" ({meaning})")
        check_choice(self.speed, SPEED_PRESETS, "speed")
        if self.scheduler is not None:
            check_choice(self.scheduler, SCHEDULERS, "scheduler")
        if self.cache_interval is not None:
            require_whole_number(self.cache_interval, "GenerationRequest cache_interval", 1, why=" (1 = off)")
        if self.cache_branch is not None:
            require_whole_number(self.cache_branch, "GenerationRequest cache_branch", 0)
        if self.cfg_end is not None:
            require_fraction(self.cfg_end, "GenerationRequest cfg_end")

    def sampling_values(self) -> dict[str, Any]:
        """Steps, solver, cache interval and branch, guidance cut-off: the ``speed`` preset's, overridden by the
        values given (``pipeline.speed_presets.speed_values``)."""
        return speed_values(self.speed, num_inference_steps=self.num_inference_steps, scheduler=self.scheduler,
                            cache_interval=self.cache_interval, cache_branch=self.cache_branch, cfg_end=self.cfg_end)


_PATH_FIELDS = ("reference_image", "audio", "output", "model_dir", "kps_path", "reference_kps_path", "dump_dir")


def request_from_cli_args(args: Any) -> GenerationRequest:
    """The command line's namespace (``cli.build_parser``) as a request."""
    overrides: dict[str, Path] = {}
    for flag, name in (
        ("unet_config_path", "unet_config"),
        ("vae_path", "vae"),
        ("audio_encoder_path", "wav2vec2"),
        ("insightface_model_path", "insightface_root"),
        *((f"{n}_path", n) for n in VEXPRESS_FILES),
    ):
        value = getattr(args, flag, None)
        if value:
            overrides[name] = Path(value)
    if args.kps_path and args.retarget_strategy == "fix_face":
        logger.warning("--kps_path is not used: fix_face keeps the reference's head still; to follow the track use "
                       "--retarget_strategy no_retarget, offset_retarget or naive_retarget")
    if args.do_multi_devices_inference:
        logger.warning("--do_multi_devices_inference does not split the work; start the command with torchrun to "
                       "use several GPUs (README: Several GPUs and machines)")
    return GenerationRequest(
        reference_image=Path(args.reference_image_path),
        audio=Path(args.audio_path),
        output=Path(args.output_path),
        model_dir=Path(args.model_dir) if args.model_dir else None,
        path_overrides=overrides,
        kps_path=Path(args.kps_path) if args.kps_path else None,
        reference_kps_path=Path(args.reference_kps_path) if args.reference_kps_path else None,
        reference_kps_space=args.reference_kps_in or ("image" if getattr(args, "full_frame", False) else "output"),
        retarget_strategy=args.retarget_strategy,
        width=args.image_width,
        height=args.image_height,
        fps=args.fps,
        seed=args.seed,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        speed=args.speed,
        scheduler=args.scheduler,
        cache_interval=args.cache_interval,
        cache_branch=args.cache_branch,
        cfg_end=args.cfg_end,
        context_frames=args.context_frames,
        context_overlap=args.context_overlap,
        reference_attention_weight=args.reference_attention_weight,
        audio_attention_weight=args.audio_attention_weight,
        num_pad_audio_frames=args.num_pad_audio_frames,
        test_stage=args.test_stage,
        compat=args.compat,
        median_filter={"auto": None, "on": True, "off": False}[args.median_filter],
        crf=args.crf,
        device=args.device,
        gpu_id=args.gpu_id,
        dtype=args.dtype,
        offload=args.save_gpu_memory,
        window_batch_size=args.window_batch_size or None,
        compile_unet=args.compile,
        download=not args.no_download,
        dump_dir=Path(args.dump_dir) if args.dump_dir else None,
        show_progress=not args.quiet,
        face_detector=args.face_detector,
        quiet_native_logs=not getattr(args, "verbose", False),
        full_frame=args.full_frame,
        face_box=_parse_box(args.face_box) if args.face_box else None,
        crop_scale=args.crop_scale,
        crop_border=args.crop_border,
        feather=args.feather,
        color_match=args.color_match,
        max_side=args.max_side or None,
    )


def _parse_box(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(part) for part in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise InputError(f"--face_box must be four numbers x1,y1,x2,y2 (reference image pixels), got {text!r}; "
                         "negative numbers work too (--face_box -50,-50,200,200)")
    return values  # type: ignore[return-value]
