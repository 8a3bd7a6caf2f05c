"""The whole job as one library call: portrait + speech (+ optional kps track) -> talking-head MP4.

This is what ``python -m vexpress_model`` runs. It wires the layers together in data-flow order (inputs ->
conditioning -> models -> pipeline -> outputs) and owns nothing else: every step is a call into those layers, so
the ComfyUI nodes, which run the same steps as separate nodes, share all the logic.

Cheap checks run first (files exist, output path writable, settings valid), then the image and the audio are read
and the frames planned, and only then is the model folder looked at (and completed by a download), so a bad input
fails in a second with a message instead of after a download or minutes of model loading; the video is written
under a temporary name and renamed only on success.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ModelFolderError
from .models.paths import VEXPRESS_FILES
from .options import CROP_BORDER_MODES, STRATEGIES_WITH_DRIVING_KPS, TEST_STAGES, check_choice
from .pipeline.windows import check_frame_settings
from .request import GenerationRequest, request_from_cli_args
from .validation import require_file, require_finite, require_inference_steps

__all__ = ["GenerationRequest", "request_from_cli_args", "run_generation"]

logger = logging.getLogger("vexpress.generate")


# ----------------------------------------------------------------------------------------------- checks


# Float settings of a request, checked for NaN / infinity before anything runs; request field -> CLI flag.
FLOAT_SETTINGS = ("fps", "guidance_scale", "reference_attention_weight", "audio_attention_weight")


def check_request(request: GenerationRequest, *, writes_output: bool = True) -> None:
    """Everything that can be checked in milliseconds, before any model is touched. ``writes_output`` False: the
    output path is not checked (the processes of a distributed run other than rank 0 never write)."""
    from .outputs.video import check_output_path

    require_file(request.reference_image, "reference image", "check --reference_image_path")
    require_file(request.audio, "audio file", "check --audio_path")
    if request.retarget_strategy in STRATEGIES_WITH_DRIVING_KPS:
        if request.kps_path is None:
            raise InputError(
                f"--retarget_strategy {request.retarget_strategy} follows a driving keypoint track, but no "
                "--kps_path was given; extract one with `python -m vexpress_model.extract_kps`, or use fix_face"
            )
        require_file(request.kps_path, "kps file", "check --kps_path")
    if request.reference_kps_path is not None:
        require_file(request.reference_kps_path, "reference kps file", "check --reference_kps_path")
    for name in ("width", "height"):
        value = getattr(request, name)
        if value <= 0 or value % 8:
            raise InputError(f"--image_{name} must be a positive multiple of 8 (the VAE works in 8-pixel blocks), "
                             f"got {value}; use {_nearest_multiples_of_8(value)}")
    require_inference_steps(request.num_inference_steps, "--num_inference_steps")
    for name in FLOAT_SETTINGS:
        require_finite(getattr(request, name), f"--{name}")
    check_frame_settings(request.fps, request.context_frames, request.context_overlap, flags=True)
    if request.test_stage not in TEST_STAGES:
        raise InputError(f"test_stage must be stage_1, stage_2 or stage_3, got {request.test_stage!r}")
    if request.face_box is not None and not request.full_frame:
        raise InputError("--face_box chooses the face crop of --full_frame; add --full_frame or drop --face_box")
    if request.full_frame and request.compat == "original":
        raise InputError("--full_frame is an addition the original does not have; use it with --compat fixed")
    if request.full_frame:
        from .conditioning.face_crop import check_crop_scale, check_face_box
        from .inputs.image import image_file_size
        from .outputs.paste_back import check_paste_settings

        check_crop_scale(request.crop_scale)
        if request.face_box is not None:  # against the photo's size from its header (no decoding)
            check_face_box(request.face_box, *image_file_size(request.reference_image))
        check_paste_settings(request.feather, request.color_match, request.max_side)
        check_choice(request.crop_border, CROP_BORDER_MODES, "--crop_border")
    if request.full_frame and request.reference_kps_path is not None and request.reference_kps_space == "output":
        raise InputError("with --full_frame the reference kps are in the photo's own pixels; drop "
                         "--reference_kps_in output")
    check_output_path(request.output, create=False)


def _nearest_multiples_of_8(value: int) -> str:
    """The valid sizes next to ``value``: "64 or 72" for 70, "8" for 0 or less."""
    below = value // 8 * 8
    return f"{below} or {below + 8}" if below >= 8 else "8"


# ------------------------------------------------------------------------------------------ model files


def locate_models(request: GenerationRequest) -> Any:
    """The model paths for the request, downloading missing files into the released layout when allowed."""
    from . import download
    from .inputs.face_backends import resolve_backend
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
            require_file(path, f"{name} checkpoint", f"check --{name}_path")
        return dataclasses.replace(paths, **files) if files else paths

    def needs_detector(paths: Any) -> bool:
        return request.reference_kps_path is None and (
            resolve_backend(request.face_detector, paths.insightface_root) == "insightface"
        )

    root = request.model_dir

    def plan_missing(paths: Any) -> list:
        if root is None:
            return []
        # Only what is missing: the SD-1.5 UNet config ships with the package, parts found elsewhere are kept.
        return download.plan_for_missing(
            paths,
            vexpress_dir=root / "v-express",
            vae_dir=root / "sd-vae-ft-mse",
            wav2vec2_dir=root / "wav2vec2-base-960h",
            insightface_root=root / "insightface_models" if needs_detector(paths) else None,
        )

    paths = download.locate_or_download(
        resolve, plan_missing, download=request.download,
        hints=download.released_layout_hints(root) if root is not None else (),
    )
    if needs_detector(paths) and paths.insightface_root is None:
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
    except RuntimeError:
        torch_device = None
    if torch_device is None or torch_device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} was asked for but this torch build sees no CUDA GPU; use --device cpu")
    if dtype == "auto":
        dtype = "fp16" if torch_device.type == "cuda" else "fp32"
    return torch_device, resolve_dtype(dtype)


# -------------------------------------------------------------------------------------------- conditions


def _face_detector(request: GenerationRequest, paths: Any, device: Any) -> Any:
    from .inputs.face_backends import create_face_detector

    return create_face_detector(request.face_detector, paths.insightface_root, device=device.type,
                                gpu_id=device.index or 0, quiet_native_logs=request.quiet_native_logs)


def reference_keypoints(request: GenerationRequest, paths: Any, device: Any) -> np.ndarray:
    """The reference kps [3, 2] in pixels of the output frame: from --reference_kps_path or face detection."""
    from .inputs.image import reference_image_size
    from .inputs.kps import check_points_in_frame, load_reference_kps, scale_points

    if request.reference_kps_path is not None:
        points = load_reference_kps(request.reference_kps_path)
        if request.reference_kps_space == "image":
            size = reference_image_size(request.reference_image)
            points = scale_points(points, size, (request.width, request.height))
        return check_points_in_frame(
            points, request.width, request.height, f"reference kps file {request.reference_kps_path}"
        )
    from .inputs.face_detection import NO_FACE_HINT, reference_kps_from_image

    return reference_kps_from_image(
        request.reference_image, request.width, request.height, request.compat,
        lambda: _face_detector(request, paths, device), name=f"reference image {request.reference_image}",
        no_face_hint=NO_FACE_HINT + ", or give the keypoints with --reference_kps_path",
    )


def full_frame_reference(request: GenerationRequest, full: np.ndarray, paths: Any, device: Any) -> Any:
    """Full-frame mode: the face crop (``CroppedReference``) of the whole reference image ``full``."""
    from .conditioning.face_crop import crop_reference
    from .inputs.kps import check_points_in_frame, load_reference_kps

    kps = None if request.reference_kps_path is None else check_points_in_frame(
        load_reference_kps(request.reference_kps_path), full.shape[1], full.shape[0],
        f"reference kps file {request.reference_kps_path}")
    name = f"reference image {request.reference_image}"
    if kps is not None:
        cropped = crop_reference(full, request.width, request.height, kps=kps, crop_scale=request.crop_scale,
                                 border=request.crop_border, name=name)
    else:
        with _face_detector(request, paths, device) as detector:
            cropped = crop_reference(full, request.width, request.height, box=request.face_box, detector=detector,
                                     crop_scale=request.crop_scale, border=request.crop_border, name=name,
                                     no_face_hint=_full_frame_no_face_hint(request))
    crop = cropped.crop
    logger.info("full frame %dx%d: face crop %d px square at (%d, %d), generated at %dx%d", full.shape[1],
                full.shape[0], crop.size, crop.left, crop.top, request.width, request.height)
    return cropped


def _full_frame_no_face_hint(request: GenerationRequest) -> str:
    """--full_frame found no face: a photo with the face visible, or the face's place by hand (not a crop)."""
    if request.face_box is not None:
        return ("check that --face_box x1,y1,x2,y2 (reference image pixels) frames the face, or give the keypoints "
                "with --reference_kps_path")
    return ("use a photo where the face is clearly visible and roughly frontal, mark the face with --face_box "
            "x1,y1,x2,y2 (reference image pixels), or give the keypoints with --reference_kps_path")


def kps_sequence(request: GenerationRequest, reference_kps: np.ndarray, num_frames: int, fps: float,
                 crop: Any = None) -> np.ndarray:
    """Per-frame kps [T, 3, 2] after resampling the driving track to the output frames and retargeting; with the
    reference's face ``crop`` (full-frame mode) the driving face is cut out by the same rule first."""
    from .conditioning.face_crop import driving_track_for_crop
    from .conditioning.kps_sequence import kps_for_frames
    from .inputs.kps import load_kps

    # fix_face follows no driving motion, so its kps file (if any) is not even read.
    driving = None
    if request.retarget_strategy != "fix_face" and request.kps_path is not None:
        driving = load_kps(request.kps_path)
        driving = driving_track_for_crop(driving, crop, request.width, request.height)
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
    """The sampling bar, shown once the first UNet call has finished (no empty bar before sampling starts). That
    call is where the bar starts counting (``initial``), so its rate is measured over real calls only, not one
    call over the microseconds since the bar was made."""
    if not enabled:
        return None, lambda: None
    from tqdm.auto import tqdm

    bars: list[Any] = []

    def progress(done: int, total: int, preview: Any) -> None:
        if not bars:
            bars.append(tqdm(total=total, initial=done, unit="call", desc="sampling", leave=False))
            return
        bar = bars[0]
        if bar.total != total:
            bar.total = total
        if done > bar.n:
            bar.update(done - bar.n)

    def close() -> None:
        for bar in bars:
            bar.close()
        bars.clear()

    return progress, close


def _counted(chunks: Iterable[np.ndarray], total: int, enabled: bool, end_sampling: Callable[[], None]):
    """Frame chunks passed through with a "decoding + encoding" bar (frames), started when sampling has ended:
    decoding, the median filter and the H.264 encode of a long clip take minutes after sampling reaches 100 %."""
    if not enabled:
        yield from chunks
        return
    from tqdm.auto import tqdm

    bar = None
    try:
        for chunk in chunks:
            if bar is None:
                end_sampling()
                bar = tqdm(total=total, unit="frame", desc="decoding + encoding", leave=False)
            yield chunk
            bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


@dataclass
class PreparedInputs:
    """What a generation needs besides the networks, read and checked before any of them is loaded."""

    paths: Any  # ModelPaths
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    reference_image: np.ndarray  # uint8 [H, W, 3]
    audio: Any  # DecodedAudio, as read (the video gets this audio)
    waveform_16k: np.ndarray  # mono 16 kHz [N]
    plan: Any  # FramePlan
    kps_sequence: np.ndarray  # [T, 3, 2] pixels
    full_image: np.ndarray | None = None  # full-frame mode: the whole picture the face is pasted back into
    cropped: Any = None  # full-frame mode: CroppedReference (the crop and its kps)


def prepare_inputs(request: GenerationRequest, *, main: bool = True) -> PreparedInputs:
    """Checks; the image and audio read and the frames planned; then device, model paths and the conditions that
    need them (face detection). ``main`` False: a process that does not write (see :func:`check_request`)."""
    from .inputs.audio import decode_audio, to_mono_16k
    from .inputs.image import load_reference_image
    from .pipeline.windows import plan_frames

    check_request(request, writes_output=main)
    # The input files are read and the frames planned before the device is chosen and the model folder looked at
    # (which may download gigabytes), and before the heavy imports that come with them: a bad image or audio file
    # is reported in a second.
    if request.full_frame:
        from .inputs.image import load_full_image

        full_image = load_full_image(request.reference_image)
    else:
        full_image = None
        reference_image = load_reference_image(request.reference_image, request.width, request.height,
                                               request.compat)
    audio = decode_audio(request.audio)
    waveform_16k = to_mono_16k(audio.waveform, audio.sample_rate, compat=request.compat)
    plan = plan_frames(
        waveform_16k.shape[0] / 16000.0, request.fps, request.context_frames, request.context_overlap, request.compat,
        flags=True,
    )
    device, dtype = choose_device_and_dtype(request.device, request.gpu_id, request.dtype)
    paths = locate_models(request)
    logger.info("%d frames at %.3f fps in %d context windows", plan.num_frames, plan.fps, len(plan.windows))
    cropped = None
    if request.full_frame:
        cropped = full_frame_reference(request, full_image, paths, device)
        reference_image, reference_kps = cropped.image, cropped.kps
    else:
        reference_kps = reference_keypoints(request, paths, device)
    sequence = kps_sequence(request, reference_kps, plan.num_frames, plan.fps,
                            crop=cropped.crop if cropped is not None else None)
    return PreparedInputs(paths, device, dtype, reference_image, audio, waveform_16k, plan, sequence, full_image,
                          cropped)


def load_models(request: GenerationRequest, inputs: PreparedInputs) -> Any:
    """The networks for ``request`` on its device (on the CPU with offload), its test stage applied."""
    from .models import load_vexpress_models

    models = load_vexpress_models(inputs.paths, inputs.dtype, "cpu" if request.offload else inputs.device)
    if request.num_pad_audio_frames != models.constants.num_pad_audio_frames:
        raise InputError(
            f"--num_pad_audio_frames {request.num_pad_audio_frames} does not fit these weights, which were trained "
            f"with {models.constants.num_pad_audio_frames}; leave it at the default"
        )
    apply_test_stage(models.denoising_unet, request.test_stage)
    return models


def run_generation(
    request: GenerationRequest, *, distributed: Any = None, model_cache: Any = None
) -> Path | None:
    """Generate the video for ``request``; returns the written path (None on the ranks of a distributed run
    that do not write).

    ``distributed``: a :class:`~vexpress_model.pipeline.distributed.DistributedRun` (torchrun): the windows of
    every step and the decode are split over its processes and rank 0 writes the video; each phase before the
    sampling ends with every process agreeing that it succeeded, so that a bad input seen by any of them stops all
    of them, before the networks are loaded. ``model_cache`` (``batch.ModelCache``) keeps the networks loaded
    between calls: ``model_cache.get(request, inputs)`` instead of :func:`load_models`.
    """
    import torch

    from .conditioning.audio_features import Waveform16k
    from .conditioning.kps_images import draw_kps_images, kps_image_source
    from .outputs.median_filter import median_filter_enabled, median_filtered_chunks
    from .outputs.video import VideoWriter
    from .pipeline.hooks import Hooks, SamplingSettings
    from .pipeline.sampler import VExpressPipeline

    main = distributed is None or distributed.launch.is_main

    def phase(work: Callable[[], Any]) -> Any:
        return work() if distributed is None else distributed.run_phase(work)

    inputs: PreparedInputs = phase(lambda: prepare_inputs(request, main=main))
    dump = _ArrayDump(request.dump_dir) if request.dump_dir is not None and main else None
    plan = inputs.plan
    kps_images = kps_image_source(inputs.kps_sequence, request.width, request.height)
    if dump is not None:
        dump("kps_sequence", inputs.kps_sequence.astype(np.float32))
        dump("kps_images", draw_kps_images(request.height, request.width, inputs.kps_sequence))

    models = phase(lambda: model_cache.get(request, inputs) if model_cache else load_models(request, inputs))
    device = inputs.device
    pipeline = VExpressPipeline(
        models,
        device=device,
        compat=request.compat,
        offload=request.offload,
        window_batch_size=request.window_batch_size,
        compile_unet=request.compile_unet,
        process_group=None if distributed is None else distributed.group,
    )
    settings = SamplingSettings.from_values(
        request.num_inference_steps, request.guidance_scale, request.reference_attention_weight,
        request.audio_attention_weight, request.seed,
    )
    progress, close_bar = _progress_bar(request.show_progress and main)
    hooks = Hooks(progress=progress, dump=dump)
    audio = Waveform16k(inputs.waveform_16k)
    try:
        frames = pipeline.generate(inputs.reference_image, kps_images, audio, plan, settings, hooks)
        if median_filter_enabled(request.median_filter, request.compat):
            frames = median_filtered_chunks(frames)
        frames = _counted(frames, plan.num_frames, request.show_progress and main, close_bar)
        if inputs.cropped is not None and main:
            from .outputs.paste_back import PasteBack, paste_back_chunks

            paster = PasteBack(inputs.full_image, inputs.cropped.crop, feather=request.feather,
                               color_match=request.color_match, max_side=request.max_side)
            frames = paste_back_chunks(frames, paster)
        if not main:
            for _ in frames:  # the other ranks decode and send their chunks while this runs
                pass
            return None
        # The original muxes the audio file as it is (not the 16 kHz copy) and cuts it to the video.
        audio_track = (inputs.audio.waveform, inputs.audio.sample_rate)
        with VideoWriter(request.output, plan.fps, audio=audio_track, crf=request.crf) as writer:
            for chunk in frames:
                writer.write(chunk)
    finally:
        close_bar()
        pipeline.finish()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return writer.path
