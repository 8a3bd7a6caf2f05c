"""``python -m vexpress_model.extract_kps``: a kps track and the audio track of a driving video.

Accepts the flags of the original ``scripts/extract_kps_sequence_and_audio.py`` (``--video_path``,
``--kps_sequence_save_path``, ``--audio_save_path``, ``--height``, ``--width``, ``--device``, ``--gpu_id``,
``--insightface_model_path``) and adds ``--kps_format`` and ``--select``. Differences from the original:

* frames with no face (or several) do not abort the run: among several faces ``--select`` picks one (default
  ``nearest``: the face nearest the previous frame's; ``largest``; ``score``), and frames without a face are filled
  from their neighbours (a warning says how many and which);
* ``--face_detector mediapipe`` (or ``auto`` without the insightface model) uses MediaPipe, whose models come
  inside the wheel;
* the kps file records the video's fps and frame size unless it is written in the original ``.pth`` format
  (``--kps_format auto`` picks the original format for ``.pth`` names, ``.json`` for ``.json`` names and our
  ``.npz`` otherwise);
* the audio is decoded and re-encoded with PyAV (no ffmpeg binary); its codec follows the extension.

Bad input prints one line to stderr and exits with status 2; nothing is left behind under the output names.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .entry import CommandParser, run_command, whole_number, with_defaults_in_help
from .errors import InputError
from .files import require_writable_file
from .options import FACE_DETECTORS, FACE_SELECTIONS, KPS_FORMATS

logger = logging.getLogger("vexpress.extract_kps")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="python -m vexpress_model.extract_kps",
        description="Extract the V-Kps keypoint track and the audio of a driving video.",
    )
    parser.add_argument("--video_path", type=str, default="", help="the driving video")
    parser.add_argument("--kps_sequence_save_path", type=str, default="", help="where to write the kps track")
    parser.add_argument("--audio_save_path", type=str, default="", help="where to write the audio (.mp3, .wav, ...)")
    parser.add_argument("--device", type=str, default="cuda", choices=("cuda", "cpu", "auto"),
                        help="face detection device (CUDA needs onnxruntime-gpu; falls back to the CPU)")
    parser.add_argument("--gpu_id", type=whole_number(0), default=0,
                        help="which CUDA GPU detects faces (--device cuda or auto)")
    parser.add_argument("--insightface_model_path", type=str, default="./model_ckpts/insightface_models/",
                        help="folder holding models/buffalo_l/det_10g.onnx")
    parser.add_argument("--height", type=int, default=512, help="frames are resized to this height first")
    parser.add_argument("--width", type=int, default=512, help="frames are resized to this width first")
    parser.add_argument("--kps_format", choices=KPS_FORMATS, default="auto",
                        help="auto: original for .pth, json for .json, npz otherwise")
    parser.add_argument("--select", choices=FACE_SELECTIONS, default="nearest",
                        help="which face to follow when a frame shows several: nearest the previous frame's face "
                             "(the largest in the first frame), the largest, or the most confident (score)")
    parser.add_argument("--face_detector", choices=FACE_DETECTORS, default="auto",
                        help="auto: insightface where its model is present, else MediaPipe when installed")
    parser.add_argument("--verbose", action="store_true",
                        help="also show MediaPipe's own native log lines (TensorFlow Lite, absl), hidden by default")
    return with_defaults_in_help(parser)


def _kps_format(path: Path, choice: str) -> str:
    if choice != "auto":
        return choice
    suffix = path.suffix.lower()
    return {".pth": "original", ".pt": "original", ".json": "json"}.get(suffix, "npz")


def _progress_bar(total_hint: int | None) -> tuple[Callable[[int, int | None], None], Callable[[], None]]:
    """A tqdm bar when tqdm is installed, else a line on stderr every 10 %."""
    try:
        from tqdm import tqdm
    except ImportError:
        state = {"next": 0.0}

        def update(done: int, total: int | None) -> None:
            if total and done / total >= state["next"]:
                print(f"detecting faces: {done}/{total} frames", file=sys.stderr, flush=True)
                state["next"] += 0.1

        return update, lambda: None
    bar = tqdm(total=total_hint, unit="frame", desc="detecting faces")

    def advance(done: int, total: int | None) -> None:
        bar.update(done - bar.n)

    return advance, bar.close


def run(args: argparse.Namespace) -> None:
    from .conditioning.kps_resample import DEFAULT_TRACK_FPS
    from .inputs.audio import decode_audio
    from .inputs.face_backends import create_face_detector
    from .inputs.face_detection import extract_kps_track
    from .inputs.kps import save_kps, save_kps_original
    from .inputs.video import probe_video
    from .outputs.audio import check_audio_path, write_audio_file

    if not args.video_path:
        raise InputError("no input: give the driving video with --video_path")
    if not args.kps_sequence_save_path and not args.audio_save_path:
        raise InputError("nothing to do: give --kps_sequence_save_path and/or --audio_save_path")
    if args.width <= 0 or args.height <= 0:
        raise InputError(f"--width and --height must be positive, got {args.width} and {args.height}")
    video = Path(args.video_path)
    info = probe_video(video)
    # Nothing is created before the work is done: missing folders are refused rather than left behind empty.
    kps_path = audio_path = None
    if args.kps_sequence_save_path:
        kps_path = require_writable_file(args.kps_sequence_save_path, "--kps_sequence_save_path")
    if args.audio_save_path:
        audio_path = check_audio_path(require_writable_file(args.audio_save_path, "--audio_save_path"))
        if not info.has_audio:
            raise InputError(
                f"video file {video} has no audio track, so --audio_save_path has nothing to save; drop that flag "
                "(and give the speech to the generator with --audio_path)"
            )
    audio = decode_audio(video) if audio_path is not None else None
    track = None
    if kps_path is not None:
        # A command line: MediaPipe's native start-up log lines are noise here (never in ComfyUI's process).
        detector = create_face_detector(args.face_detector, args.insightface_model_path, device=args.device,
                                        gpu_id=args.gpu_id, quiet_native_logs=not args.verbose)
        update, finish = _progress_bar(info.num_frames)
        try:
            track = extract_kps_track(video, detector, width=args.width, height=args.height,
                                      select=args.select, progress=update)
        finally:
            finish()
    if track is not None and kps_path is not None:
        fmt = _kps_format(kps_path, args.kps_format)
        if fmt == "original":
            if track.fps is not None and abs(track.fps - DEFAULT_TRACK_FPS) > 1e-3:
                # The original format has no fps field: readers assume 30 fps, so the motion would play at the
                # wrong speed. Our own format keeps the fps.
                logger.warning(
                    "the video runs at %.3g fps, but the original .pth format stores no fps and is read as %g fps; "
                    "save to a .npz path instead to keep the timing", track.fps, DEFAULT_TRACK_FPS
                )
            save_kps_original(kps_path, track)
        else:
            save_kps(kps_path, track, fmt)
        logger.info("wrote %d kps frames (%s fps, %dx%d) to %s", track.num_frames, track.fps, track.width,
                    track.height, kps_path)
    if audio is not None and audio_path is not None:
        try:
            write_audio_file(audio_path, audio.waveform, audio.sample_rate)
        except BaseException:
            if track is not None and kps_path is not None:
                kps_path.unlink(missing_ok=True)  # all or nothing
            raise
        logger.info("wrote %.2f s of audio to %s", audio.duration_s, audio_path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
