"""The whole job as one library call: portrait + speech (+ optional kps track) -> talking-head MP4.

This is what ``python -m vexpress_model`` runs. It wires the layers together in data-flow order (inputs ->
conditioning -> models -> pipeline -> outputs) and owns nothing else: every step is a call into those layers, so
the ComfyUI nodes, which run the same steps as separate nodes, share all the logic.

Cheap checks run first (files exist, output path writable, settings valid, model folder complete), so a bad
input fails in a second with a message instead of after minutes of model loading; the video is written under a
temporary name and renamed only on success.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .conditioning.face_crop import DEFAULT_CROP_SCALE
from .errors import InputError, ModelFolderError
from .models.paths import VEXPRESS_FILES
from .options import STRATEGIES_WITH_DRIVING_KPS
from .outputs.paste_back import DEFAULT_COLOR_MATCH, DEFAULT_FEATHER

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
    retarget_strategy: str = "no_retarget"
    width: int = 512
    height: int = 512
    fps: float = 30.0
    seed: int = 42
    num_inference_steps: int = 25
    guidance_scale: float = 3.5
    context_frames: int = 24
    context_overlap: int = 4
    reference_attention_weight: float = 1.0
    audio_attention_weight: float = 1.0
    num_pad_audio_frames: int = 2
    test_stage: str = "stage_3"
    compat: str = "fixed"
    median_filter: bool | None = None  # None: on in compat="original" only, as the original always filters
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
    if args.do_multi_devices_inference:
        logger.warning("--do_multi_devices_inference: the work is not split across devices; running on one device")
    return GenerationRequest(
        reference_image=Path(args.reference_image_path),
        audio=Path(args.audio_path),
        output=Path(args.output_path),
        model_dir=Path(args.model_dir) if args.model_dir else None,
        path_overrides=overrides,
        kps_path=Path(args.kps_path) if args.kps_path else None,
        reference_kps_path=Path(args.reference_kps_path) if args.reference_kps_path else None,
        retarget_strategy=args.retarget_strategy,
        width=args.image_width,
        height=args.image_height,
        fps=args.fps,
        seed=args.seed,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
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
        raise InputError(f"--face_box must be four numbers x1,y1,x2,y2 (reference image pixels), got {text!r}")
    return values  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- checks


def _require_file(path: Path | None, what: str, fix: str) -> Path:
    if path is None or not Path(path).is_file():
        raise InputError(f"{what} {path} does not exist; {fix}")
    return Path(path)


def check_request(request: GenerationRequest) -> None:
    """Everything that can be checked in milliseconds, before any model is touched."""
    from .outputs.video import check_output_path

    _require_file(request.reference_image, "reference image", "check --reference_image_path")
    _require_file(request.audio, "audio file", "check --audio_path")
    if request.retarget_strategy in STRATEGIES_WITH_DRIVING_KPS:
        if request.kps_path is None:
            raise InputError(
                f"--retarget_strategy {request.retarget_strategy} follows a driving keypoint track, but no "
                "--kps_path was given; extract one with `python -m vexpress_model.extract_kps`, or use fix_face"
            )
        _require_file(request.kps_path, "kps file", "check --kps_path")
    if request.reference_kps_path is not None:
        _require_file(request.reference_kps_path, "reference kps file", "check --reference_kps_path")
    for name in ("width", "height"):
        value = getattr(request, name)
        if value <= 0 or value % 8:
            raise InputError(f"image {name} must be a positive multiple of 8, got {value}")
    if request.num_inference_steps < 1:
        raise InputError(f"num_inference_steps must be at least 1, got {request.num_inference_steps}")
    if request.test_stage not in ("stage_1", "stage_2", "stage_3"):
        raise InputError(f"test_stage must be stage_1, stage_2 or stage_3, got {request.test_stage!r}")
    if request.face_box is not None and not request.full_frame:
        raise InputError("--face_box chooses the face crop of --full_frame; add --full_frame or drop --face_box")
    if request.full_frame and request.compat == "original":
        raise InputError("--full_frame is an addition the original does not have; use it with --compat fixed")
    if request.full_frame:
        from .conditioning.face_crop import BORDER_MODES, check_crop_scale
        from .outputs.paste_back import check_paste_settings

        check_crop_scale(request.crop_scale)
        check_paste_settings(request.feather, request.color_match, request.max_side)
        if request.crop_border not in BORDER_MODES:
            raise InputError(f"--crop_border must be one of {', '.join(BORDER_MODES)}, got {request.crop_border!r}")
    check_output_path(request.output)


# ------------------------------------------------------------------------------------------ model files


def locate_models(request: GenerationRequest) -> Any:
    """The model paths for the request, downloading missing files first when allowed."""
    from .models import resolve_model_paths

    def resolve() -> Any:
        overrides = request.path_overrides
        paths = resolve_model_paths(
            request.model_dir if request.model_dir is not None and request.model_dir.is_dir() else None,
            unet_config=overrides.get("unet_config"),
            vae=overrides.get("vae"),
            wav2vec2=overrides.get("wav2vec2"),
            insightface_root=overrides.get("insightface_root"),
        )
        files = {name: overrides[name] for name in VEXPRESS_FILES if name in overrides}
        for name, path in files.items():
            _require_file(path, f"{name} checkpoint", f"check --{name}_path")
        return dataclasses.replace(paths, **files) if files else paths

    from .inputs.face_backends import resolve_backend

    paths = resolve()
    needs_detector = request.reference_kps_path is None and (
        resolve_backend(request.face_detector, paths.insightface_root) == "insightface"
    )
    incomplete = paths.missing() or (needs_detector and paths.insightface_root is None)
    if incomplete and request.model_dir is not None:
        from . import download

        plan = download.released_layout_plan(request.model_dir, face_detector=needs_detector)
        # Raises ModelFolderError listing every file with its URL and destination when not allowed or offline.
        download.ensure_files(plan, download=request.download)
        paths = resolve()
    paths.require()
    if needs_detector and paths.insightface_root is None:
        _, fix = paths.describe_missing("insightface_root")
        raise ModelFolderError(
            "the insightface face detector (buffalo_l/det_10g.onnx) was not found; "
            f"{fix}, or give the reference keypoints with --reference_kps_path, or install mediapipe and use "
            "--face_detector mediapipe"
        )
    return paths


def choose_device_and_dtype(device: str, gpu_id: int, dtype: str) -> tuple[Any, Any]:
    """``auto`` device: CUDA when available, else CPU; ``auto`` dtype: fp16 on CUDA, fp32 elsewhere (CPU fp16
    kernels are slow or missing)."""
    import torch

    from .models import resolve_dtype

    if device == "auto":
        device = f"cuda:{gpu_id}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = f"cuda:{gpu_id}"
    try:
        torch_device = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r} ({exc}); use auto, cpu, cuda or cuda:N") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} was asked for but this torch build sees no CUDA GPU; use --device cpu")
    if dtype == "auto":
        dtype = "fp16" if torch_device.type == "cuda" else "fp32"
    return torch_device, resolve_dtype(dtype)


# -------------------------------------------------------------------------------------------- conditions


def _face_detector(request: GenerationRequest, paths: Any, device: Any) -> Any:
    from .inputs.face_backends import create_face_detector

    return create_face_detector(request.face_detector, paths.insightface_root, device=device.type,
                                gpu_id=device.index or 0)


def reference_keypoints(request: GenerationRequest, paths: Any, device: Any) -> np.ndarray:
    """The reference kps [3, 2] in pixels of the output frame: from --reference_kps_path or face detection."""
    from .inputs.kps import load_reference_kps

    if request.reference_kps_path is not None:
        return load_reference_kps(request.reference_kps_path)
    from .inputs.face_detection import reference_kps_from_image

    return reference_kps_from_image(
        request.reference_image, request.width, request.height, request.compat,
        lambda: _face_detector(request, paths, device), name=f"reference image {request.reference_image}",
    )


def full_frame_reference(request: GenerationRequest, paths: Any, device: Any) -> tuple[np.ndarray, Any]:
    """Full-frame mode: the whole reference image and its face crop (``CroppedReference``)."""
    from .conditioning.face_crop import crop_reference
    from .inputs.image import load_full_image
    from .inputs.kps import load_reference_kps

    full = load_full_image(request.reference_image)
    kps = load_reference_kps(request.reference_kps_path) if request.reference_kps_path is not None else None
    name = f"reference image {request.reference_image}"
    if kps is not None:
        cropped = crop_reference(full, request.width, request.height, kps=kps, crop_scale=request.crop_scale,
                                 border=request.crop_border, name=name)
    else:
        with _face_detector(request, paths, device) as detector:
            cropped = crop_reference(full, request.width, request.height, box=request.face_box, detector=detector,
                                     crop_scale=request.crop_scale, border=request.crop_border, name=name)
    crop = cropped.crop
    logger.info("full frame %dx%d: face crop %d px square at (%d, %d), generated at %dx%d", full.shape[1],
                full.shape[0], crop.size, crop.left, crop.top, request.width, request.height)
    return full, cropped


def kps_sequence(request: GenerationRequest, reference_kps: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
    """Per-frame kps [T, 3, 2] after resampling the driving track to the output frames and retargeting."""
    from .conditioning.kps_sequence import kps_for_frames
    from .inputs.kps import load_kps

    # fix_face follows no driving motion, so its kps file (if any) is not even read.
    driving = None
    if request.retarget_strategy != "fix_face" and request.kps_path is not None:
        driving = load_kps(request.kps_path)
        if request.full_frame:  # the driving face, cut out by the same rule as the reference face
            from .conditioning.face_crop import normalise_driving_track

            driving, _ = normalise_driving_track(driving, request.width, request.height,
                                                 crop_scale=request.crop_scale)
    track = kps_for_frames(
        reference_kps, driving, request.retarget_strategy, num_frames, fps, request.width, request.height,
        request.compat,
    )
    return track.points


def apply_test_stage(unet: Any, test_stage: str) -> None:
    """``stage_1`` of the original: no motion (motion-module output projections zeroed) and no audio (audio
    attention output zeroed); ``stage_2``/``stage_3`` change nothing."""
    import torch

    if test_stage != "stage_1":
        return
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "temporal_transformer.proj_out" in name or "attn2.to_out" in name:
                parameter.zero_()


# ----------------------------------------------------------------------------------------------- running


class _ArrayDump:
    """Writes the intermediate arrays as ``<dump_dir>/<name>.npy`` (the parity fixtures' names)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the dump folder {self.folder}: {exc.strerror}") from None

    def __call__(self, name: str, array: np.ndarray) -> None:
        np.save(self.folder / f"{name}.npy", array)


def _progress_bar(enabled: bool) -> tuple[Callable[[int, int, Any], None] | None, Callable[[], None]]:
    if not enabled:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=0, unit="call", desc="sampling", leave=False)

    def progress(done: int, total: int, preview: Any) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return progress, bar.close


def run_generation(request: GenerationRequest) -> Path:
    """Generate the video for ``request``; returns the written path."""
    import torch

    from .conditioning.kps_images import draw_kps_images, kps_image_source
    from .inputs.audio import decode_audio, to_mono_16k
    from .inputs.image import load_reference_image
    from .models import load_vexpress_models
    from .outputs.video import VideoWriter
    from .pipeline.hooks import Hooks, SamplingSettings
    from .pipeline.sampler import VExpressPipeline
    from .pipeline.timing import plan_frames

    check_request(request)
    paths = locate_models(request)
    device, dtype = choose_device_and_dtype(request.device, request.gpu_id, request.dtype)
    dump = _ArrayDump(request.dump_dir) if request.dump_dir is not None else None

    full_image = cropped = None
    if request.full_frame:
        full_image, cropped = full_frame_reference(request, paths, device)
        reference_image, reference_kps = cropped.image, cropped.kps
    else:
        reference_image = load_reference_image(request.reference_image, request.width, request.height,
                                               request.compat)
    audio = decode_audio(request.audio)
    waveform_16k = to_mono_16k(audio.waveform, audio.sample_rate)
    plan = plan_frames(
        waveform_16k.shape[0] / 16000.0, request.fps, request.context_frames, request.context_overlap, request.compat
    )
    logger.info("%d frames at %.3f fps in %d context windows", plan.num_frames, plan.fps, len(plan.windows))
    if not request.full_frame:
        reference_kps = reference_keypoints(request, paths, device)
    sequence = kps_sequence(request, reference_kps, plan.num_frames, plan.fps)
    kps_images = kps_image_source(sequence, request.width, request.height)
    if dump is not None:
        dump("kps_sequence", sequence.astype(np.float32))
        dump("kps_images", draw_kps_images(request.height, request.width, sequence))

    models = load_vexpress_models(paths, dtype, "cpu" if request.offload else device)
    if request.num_pad_audio_frames != models.constants.num_pad_audio_frames:
        raise InputError(
            f"--num_pad_audio_frames {request.num_pad_audio_frames} does not fit these weights, which were trained "
            f"with {models.constants.num_pad_audio_frames}; leave it at the default"
        )
    apply_test_stage(models.denoising_unet, request.test_stage)
    pipeline = VExpressPipeline(
        models,
        device=device,
        compat=request.compat,
        offload=request.offload,
        window_batch_size=request.window_batch_size,
        compile_unet=request.compile_unet,
    )
    settings = SamplingSettings.from_values(
        request.num_inference_steps, request.guidance_scale, request.reference_attention_weight,
        request.audio_attention_weight, request.seed,
    )
    progress, close_bar = _progress_bar(request.show_progress)
    hooks = Hooks(progress=progress, dump=dump)
    median_filter = request.compat == "original" if request.median_filter is None else request.median_filter
    try:
        frames = pipeline.generate(reference_image, kps_images, waveform_16k, plan, settings, hooks)
        if cropped is not None:
            from .outputs.paste_back import PasteBack, paste_back_chunks

            paster = PasteBack(full_image, cropped.crop, feather=request.feather, color_match=request.color_match,
                               max_side=request.max_side)
            frames = paste_back_chunks(frames, paster)
        # The original muxes the audio file as it is (not the 16 kHz copy) and cuts it to the video.
        with VideoWriter(
            request.output, plan.fps, audio=(audio.waveform, audio.sample_rate), crf=request.crf,
            median_filter=median_filter,
        ) as writer:
            for chunk in frames:
                writer.write(chunk)
    finally:
        close_bar()
        pipeline.finish()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return writer.path
