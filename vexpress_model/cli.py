"""``python -m vexpress_model``: the command line of the original ``inference.py``, plus our additions.

Every flag of the original is accepted (docs/spec.md §4.1) with the user manual's defaults. Additions: ``--model_dir``
(a folder in the released layout; the individual path flags still override), ``--reference_kps_path``,
``--compat {fixed,original}``, ``--dump_dir``, ``--crf``, ``--median_filter``, ``--no_download`` and a few
speed knobs. Bad input ends with one line on stderr and exit code 2 (missing model files: a short table of them and
the ways to get them, also exit code 2), and leaves no output file behind. Ctrl-C or SIGTERM while it runs: exit
code 130, the video being written is discarded (an existing file under the output name is left as it was).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from .conditioning.face_crop import DEFAULT_CROP_SCALE
from .entry import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    CommandParser,
    Outcome,
    one_line,
    run_command,
    setup_logging,
    with_defaults_in_help,
)
from .entry import whole_number as _whole_number
from .errors import InputError, ProcessFailedError, Terminated, VExpressError
from .options import (
    COLOR_MATCH_MODES,
    COMPAT_MODES,
    CROP_BORDER_MODES,
    DTYPES,
    FACE_DETECTORS,
    MEDIAN_FILTER_MODES,
    MIN_MAX_SIDE,
    REFERENCE_KPS_SPACES,
    RETARGET_STRATEGIES,
    SCHEDULERS,
    SPEED_PRESETS,
    TEST_STAGES,
)
from .outputs.paste_back import DEFAULT_COLOR_MATCH, DEFAULT_FEATHER
from .pipeline.distributed import DEFAULT_TIMEOUT_S
from .validation import MAX_CRF

EXIT_FAILED = 1  # a process of a torchrun launch failed for another reason than a bad input


def _audio_rate(text: str) -> int:
    try:
        rate = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if rate != 16000:
        raise argparse.ArgumentTypeError(
            f"must be 16000, got {rate}: wav2vec2-base-960h was trained on 16 kHz audio (any input rate is "
            "resampled to it); leave the flag out")
    return rate


def _max_side(text: str) -> int:
    side = _whole_number(0)(text)
    if 0 < side < MIN_MAX_SIDE:
        raise argparse.ArgumentTypeError(f"must be 0 (keep the photo's size) or at least {MIN_MAX_SIDE} pixels, "
                                         f"got {side}")
    return side


def _float_within(text: str, accept: Callable[[float], bool], requirement: str) -> float:
    """An argparse type: the float ``text`` if ``accept`` holds (NaN never does), else "must be <requirement>"."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    return _float_within(text, lambda value: 0 < value < float("inf"), "a number of seconds above 0")


def _fraction(text: str) -> float:
    return _float_within(text, lambda value: 0.0 < value <= 1.0,
                         "greater than 0 and at most 1 (a fraction of the steps)")


def add_speed_flags(group: Any) -> None:
    """The fast modes' flags (docs/speed.md); None: the ``--speed`` preset's value."""
    group.add_argument("--speed", default="exact", choices=SPEED_PRESETS,
                       help="exact: the original's sampler; balanced / fast: fewer, cheaper UNet steps (sets "
                            "--scheduler, --num_inference_steps, --cache_interval and --cfg_end; flags given "
                            "override it; docs/speed.md)")
    group.add_argument("--scheduler", default=None, choices=SCHEDULERS,
                       help="solver (default: the --speed preset's; ddim for exact)")
    group.add_argument("--cache_interval", default=None,
                       type=_whole_number(1, why=" (1 = the whole UNet every step)"),
                       help="DeepCache: the whole UNet every N-th step, only its shallow part in between "
                            "(default: the --speed preset's; 1 = off for exact)")
    group.add_argument("--cache_branch", default=None, type=_whole_number(0),
                       help="DeepCache depth: 0 (default) keeps only the shallowest layers running on cached steps "
                            "(fastest); higher values run more of the UNet")
    group.add_argument("--cfg_end", default=None, type=_fraction,
                       help="fraction of the steps with classifier-free guidance; the rest run the conditional "
                            "branch only (default: the --speed preset's; 1.0 for exact)")


class _RaisingParser(CommandParser):
    """A parser whose errors are exceptions (InputError) instead of a usage message and exit: for the flags of
    one job among many (``vexpress_model.batch``), where one bad job must not end the others."""

    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def build_parser(*, inputs_required: bool = True, for_jobs: bool = False, prog: str = "python -m vexpress_model"
                 ) -> argparse.ArgumentParser:
    """The command line's flags. ``inputs_required`` False: the input paths may be left out (the batch command
    line, whose jobs give them); ``for_jobs``: errors raise InputError instead of exiting."""
    parser_class = _RaisingParser if for_jobs else CommandParser
    parser = parser_class(
        prog=prog,
        description="Generate a lip-synced talking-head video (H.264 + AAC) from a portrait and a speech recording.",
    )
    models = parser.add_argument_group("model files (default: the released layout under --model_dir)")
    models.add_argument("--model_dir", default="./model_ckpts",
                        help="folder in the released tk93/V-Express layout (default: ./model_ckpts)")
    models.add_argument("--unet_config_path", help="SD-1.5 UNet config.json")
    models.add_argument("--vae_path", help="sd-vae-ft-mse folder")
    models.add_argument("--audio_encoder_path", help="wav2vec2-base-960h folder")
    models.add_argument("--insightface_model_path", help="insightface root (holds models/buffalo_l/det_10g.onnx)")
    models.add_argument("--denoising_unet_path")
    models.add_argument("--reference_net_path")
    models.add_argument("--v_kps_guider_path")
    models.add_argument("--audio_projection_path")
    models.add_argument("--motion_module_path")
    models.add_argument("--face_detector", default="auto", choices=FACE_DETECTORS,
                        help="auto: insightface where its model is present, else MediaPipe when installed")
    models.add_argument("--no_download", action="store_true",
                        help="never download missing weights; report what goes where instead")

    inputs = parser.add_argument_group("inputs and output")
    inputs.add_argument("--reference_image_path", required=inputs_required,
                        help="portrait image (a face-centred square crop; any photo with --full_frame)")
    inputs.add_argument("--audio_path", required=inputs_required,
                        help="speech audio: mp3, wav, flac, m4a/aac or ogg, any sample rate")
    inputs.add_argument("--kps_path", default="",
                        help="driving keypoint track (.pth original format, or .npz/.json); not needed for fix_face")
    inputs.add_argument("--reference_kps_path", default="",
                        help="reference keypoints from a file (.json [[x,y]x3], .pth or .npz) instead of face "
                             "detection: in pixels of the --image_width x --image_height output frame, or of the "
                             "portrait's own pixels with --reference_kps_in image (always with --full_frame)")
    inputs.add_argument("--reference_kps_in", default=None, choices=REFERENCE_KPS_SPACES,
                        help="pixel space of --reference_kps_path: output (the generated frame; the default) or image "
                             "(the reference image file's own pixels; the default and only choice with --full_frame)")
    inputs.add_argument("--output_path", default="./output/vexpress.mp4", help="the .mp4 to write")
    inputs.add_argument("--dump_dir", default="", help="write intermediate arrays (.npy, parity names) here")

    generation = parser.add_argument_group("generation")
    generation.add_argument("--retarget_strategy", default="no_retarget", choices=RETARGET_STRATEGIES)
    generation.add_argument("--image_width", type=int, default=512)
    generation.add_argument("--image_height", type=int, default=512)
    generation.add_argument("--fps", type=float, default=30.0)
    generation.add_argument("--seed", type=int, default=42)
    generation.add_argument("--num_inference_steps", type=int, default=None,
                            help="denoising steps (default: the --speed preset's; 25 for exact)")
    generation.add_argument("--guidance_scale", type=float, default=3.5)
    add_speed_flags(generation)
    generation.add_argument("--context_frames", type=int, default=24, help="frames per context window (at most 32)")
    generation.add_argument("--context_overlap", type=int, default=4)
    generation.add_argument("--reference_attention_weight", type=float, default=1.0)
    generation.add_argument("--audio_attention_weight", type=float, default=1.0)
    generation.add_argument("--num_pad_audio_frames", type=int, default=2,
                            help="audio context frames on each side; the released weights need 2")
    generation.add_argument("--standard_audio_sampling_rate", type=_audio_rate, default=16000,
                            help="accepted for compatibility: wav2vec2 needs 16000")
    generation.add_argument("--audio_embeddings_type", default="global", choices=("global",))
    generation.add_argument("--test_stage", default="stage_3", choices=TEST_STAGES,
                            help="stage_1 disables motion modules and audio attention (as in the original)")
    generation.add_argument("--compat", default="fixed", choices=COMPAT_MODES,
                            help="fixed (default): the original's timing/retarget bugs fixed; "
                                 "original: reproduce the original implementation exactly")
    generation.add_argument("--median_filter", default="auto", choices=MEDIAN_FILTER_MODES,
                            help="the original's 3x3x3 median post-filter (auto: on with --compat original)")
    generation.add_argument("--crf", type=_whole_number(0, MAX_CRF, " (H.264 quality)"), default=17,
                            help=f"H.264 quality, 0 to {MAX_CRF} (lower is better; 17 is near lossless)")

    full_frame = parser.add_argument_group(
        "full frame (any photo: the face is cut out, animated and pasted back into the whole picture)")
    full_frame.add_argument("--full_frame", action="store_true",
                            help="crop the face out of the reference image, generate at --image_width x "
                                 "--image_height, paste the result back; the video has the image's own size")
    full_frame.add_argument("--face_box", default="",
                            help="x1,y1,x2,y2 (reference image pixels): the face's box; the crop is planned around "
                                 "it instead of around a face found in the whole photo, and the face's keypoints are "
                                 "then detected inside that crop (a face must still be found there)")
    full_frame.add_argument("--crop_scale", type=float, default=DEFAULT_CROP_SCALE,
                            help=f"crop side in face sizes (default {DEFAULT_CROP_SCALE}: head and shoulders, the "
                                 "framing the model was trained on)")
    full_frame.add_argument("--crop_border", default="pad", choices=CROP_BORDER_MODES,
                            help="a crop past the image edge: pad (repeat the edge, face stays centred) or shift")
    full_frame.add_argument("--feather", type=float, default=DEFAULT_FEATHER,
                            help=f"soft edge of the pasted face, as a fraction of the crop side (default "
                                 f"{DEFAULT_FEATHER})")
    full_frame.add_argument("--color_match", default=DEFAULT_COLOR_MATCH, choices=COLOR_MATCH_MODES,
                            help="match the generated face's colours to the photo: once per clip (default), per "
                                 "frame, or off")
    full_frame.add_argument("--max_side", type=_max_side, default=0,
                            help="scale the output down so its longer side is at most this many pixels (0: keep; "
                                 f"else at least {MIN_MAX_SIDE})")

    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto: cuda when available)")
    runtime.add_argument("--gpu_id", type=_whole_number(0), default=0)
    runtime.add_argument("--dtype", default="auto", choices=DTYPES,
                         help="auto: fp16 on CUDA, fp32 on CPU")
    runtime.add_argument("--save_gpu_memory", action="store_true",
                         help="keep only the running stage's networks on the GPU (really frees memory)")
    runtime.add_argument("--window_batch_size", type=_whole_number(0), default=0,
                         help="context windows per UNet call (0: as many as the memory budget allows)")
    runtime.add_argument("--compile", action="store_true", help="torch.compile the denoising UNet")
    runtime.add_argument("--do_multi_devices_inference", action="store_true",
                         help="accepted for compatibility; to split the work over several GPUs start the command "
                              "with torchrun (README: Several GPUs and machines)")
    runtime.add_argument("--dist_timeout", type=_positive_seconds, default=DEFAULT_TIMEOUT_S,
                         help="under torchrun: seconds the processes wait for each other before giving up "
                              f"(default {DEFAULT_TIMEOUT_S:.0f})")
    runtime.add_argument("--quiet", action="store_true", help="no progress bars")
    runtime.add_argument("--verbose", action="store_true",
                         help="also show MediaPipe's own native log lines (TensorFlow Lite, absl), hidden by default")
    return with_defaults_in_help(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .pipeline.distributed import torchrun_launch

    launch: Any = None

    def work() -> None:
        nonlocal launch
        launch = torchrun_launch()
        quiet = args.quiet or (launch is not None and not launch.is_main)  # progress and logs once, from rank 0
        setup_logging(logging.WARNING if quiet else logging.INFO)
        if launch is not None:
            return main_distributed(args, launch)
        from .generate import run_generation
        from .request import request_from_cli_args

        with _sigterm_as_interrupt():
            print(run_generation(request_from_cli_args(args)))

    def explain(error: BaseException) -> Outcome | None:
        return None if launch is None else distributed_outcome(error, launch)

    return run_command(work, log_level=None, interrupted_message="interrupted: no video was written", explain=explain)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler ending the job) handled like Ctrl-C while the command runs: the video
    being written is discarded on the way out instead of staying behind as a hidden partial file. The previous
    handler comes back afterwards (``main`` may be called from a program of its own)."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals are the host program's business
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main_distributed(args: argparse.Namespace, launch: Any) -> None:
    """The command under torchrun: one clip over all processes (see ``pipeline.distributed``); its failures are
    worded by :func:`distributed_outcome`."""
    from .generate import run_generation
    from .pipeline.distributed import DistributedRun, process_device, raise_on_sigterm
    from .request import request_from_cli_args

    raise_on_sigterm()
    request = request_from_cli_args(args)
    request.device = process_device(request.device, launch)
    if not launch.is_main:
        request.show_progress = False
    with DistributedRun(launch, request.device, timeout_s=args.dist_timeout) as run:
        output = run_generation(request, distributed=run)
    if output is not None:
        print(output)


def distributed_outcome(error: BaseException, launch: Any) -> Outcome | None:
    """How a torchrun process ends after ``error``: a failure agreed on by all processes (a bad input anywhere) is
    printed once, by rank 0 (one all processes of a machine share, once per machine); a failure of this process's
    own work is printed by it, naming its rank; a process stopped because another failed (a collective lost its
    peers, or torchrun's SIGTERM) says so in a line that is not an ``error:``."""
    from .pipeline.distributed import is_collective_failure, record_error_for_torchrun

    name = launch.name()
    if isinstance(error, ProcessFailedError):
        return ("error: " + one_line(error) if launch.is_main else None,
                EXIT_USER_ERROR if error.user_error else EXIT_FAILED)
    if isinstance(error, VExpressError):
        record_error_for_torchrun(error)
        if getattr(error, "same_on_every_process", False):  # e.g. no CUDA: said once per machine
            return ("error: " + one_line(error) if launch.local_rank == 0 else None), EXIT_USER_ERROR
        return f"error: {name}: " + one_line(error), EXIT_USER_ERROR
    if isinstance(error, (Terminated, KeyboardInterrupt)):
        return (f"{name} stopped: torchrun ended the run (another process failed or it was interrupted); "
                "no video was written"), EXIT_INTERRUPTED
    if not isinstance(error, Exception):
        return None
    if is_collective_failure(error):
        return (f"{name} stopped: lost the other processes ({one_line(error)[:300]}); the process that failed "
                "first reports the cause; no video was written"), EXIT_FAILED
    record_error_for_torchrun(error)
    return f"error: {name} failed: {type(error).__name__}: {one_line(error)}", EXIT_FAILED
