"""Writing the result: the original's median post-filter, uint8 conversion, and one H.264 + AAC encode.

:class:`VideoWriter` takes uint8 RGB frames as the pipeline produces them and encodes them straight into an
MP4 (H.264 ``yuv420p``, constant quality ``crf``, BT.709 limited range, tagged), with the audio encoded
as AAC in the same pass and interleaved with the video. Nothing is written under the final name until the
file is complete: the encoder writes to a hidden temporary file in the target folder, which is renamed on
:meth:`VideoWriter.close` and deleted if anything fails (or on :meth:`VideoWriter.abort`).

* **Reproducible.** The same frames and settings give the same MP4 bytes on any machine, in any process
  layout, every time. Two things made them differ: x264's thread count, which FFmpeg otherwise derives from the
  CPUs this process may use (a torchrun rank, a pinned job or a 2-core CI runner each wrote a different file),
  so the encoder always runs :data:`ENCODER_THREADS` frame threads; and x264's CPU-specific macroblock-tree
  code, whose results varied from run to run even in one process on real footage (up to 50 grey levels
  after decoding), so x264 runs its canonical code path (``cpu-independent``; about 10-25 % slower encoding).
* **Timing.** Frame *i* has the timestamp ``i / fps`` exactly: the fps is kept as a fraction (e.g. 320/11
  for the original's 29.09 fps) and the stream time base is ``1 / numerator``.
* **Audio.** The waveform handed in (normally the one the video was generated from) is cut or padded with
  silence to the video's duration, ``frames / fps``.
* **Size.** H.264 in ``yuv420p`` needs even dimensions; an odd width or height is padded by repeating the
  last column or row (``odd_size="pad"``, default) or cropped by one (``"crop"``).
* **Median filter**: the original's post-filter lives in :mod:`.median_filter`; it runs on the frames before
  they reach the writer (:func:`write_video` takes ``median_filter=True`` as a shortcut).
* **Metadata.** ``metadata`` (str -> str, e.g. ComfyUI's ``prompt`` and ``workflow`` JSON) is written into the
  container's global tags; MP4/MOV get the muxer option ``movflags=use_metadata_tags`` so that any key is kept
  (without it only a few known keys such as ``comment`` survive). Matroska stores them as tags (FFmpeg reads
  their names back upper-cased).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import discard, partial_path, require_writable_file
from .median_filter import median_filtered_chunks

logger = logging.getLogger("vexpress.outputs")

DEFAULT_CRF = 17
# A fixed x264 frame-thread count: the output bytes depend on it, so it must not follow the machine's CPUs.
ENCODER_THREADS = 4
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
_CONTAINER_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


# ------------------------------------------------------------------------------------- frame conversion


def to_uint8(frames: Any, compat: str = "fixed") -> np.ndarray:
    """Float frames in [0, 1] to uint8: rounding (fixed) or the original's truncation ``(x*255).astype(uint8)``."""
    if hasattr(frames, "detach"):
        frames = frames.detach().to("cpu").float().numpy()
    array = np.asarray(frames)
    if compat == "original":
        return (array.astype(np.float32) * np.float32(255)).astype(np.uint8)
    if compat != "fixed":
        raise ValueError(f"compat must be 'fixed' or 'original', got {compat!r}")
    return np.rint(np.clip(array.astype(np.float32), 0.0, 1.0) * np.float32(255)).astype(np.uint8)


def video_tensor_to_frames(video: Any) -> np.ndarray:
    """The pipeline's video layout [1, 3, T, H, W] (or [3, T, H, W]) to frames [T, H, W, 3]."""
    if hasattr(video, "detach"):
        video = video.detach().to("cpu").numpy()
    array = np.asarray(video)
    if array.ndim == 5:
        array = array[0]
    if array.ndim != 4 or array.shape[0] != 3:
        raise ValueError(f"video must be [1, 3, T, H, W] or [3, T, H, W], got {array.shape}")
    return np.ascontiguousarray(array.transpose(1, 2, 3, 0))


# ------------------------------------------------------------------------------------------ output path


def check_output_path(path: str | Path, *, create: bool = True) -> Path:
    """Make sure a video can be written at ``path``; raise InputError if not.

    ``create``: make its missing folders now (the writer); otherwise only check that the nearest existing folder
    takes files, so that a run failing later leaves no empty folder behind.
    """
    path = Path(path)
    if path.suffix.lower() not in _CONTAINER_FORMATS:
        raise InputError(f"output path {path} must end in .mp4 (or .mov / .mkv)")
    return require_writable_file(path, "the output video", folders="create" if create else "later")


def _exact_fps(fps: float | Fraction) -> Fraction:
    rate = Fraction(fps).limit_denominator(100_000) if not isinstance(fps, Fraction) else fps
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


# ----------------------------------------------------------------------------------------------- writer


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The container tags as a plain dict; names must be non-empty text, values text, neither holding NUL."""
    tags: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not key or "\0" in key:
            raise ValueError(f"video metadata names must be non-empty strings, got {key!r}")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"video metadata {key!r} must be a string without NUL characters, "
                             f"got {type(value).__name__}")
        tags[key] = value
    return tags


class VideoWriter:
    """Streams uint8 RGB frames into an H.264 + AAC MP4, written atomically (see the module docstring).

    Use as a context manager, or call :meth:`close` (finish and rename) / :meth:`abort` (discard).
    ``audio`` is ``(waveform, sample_rate)`` with waveform float [samples] or [channels, samples] in [-1, 1].
    ``metadata`` maps tag names to text written into the container (see the module docstring).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float | Fraction,
        *,
        audio: tuple[np.ndarray, int] | None = None,
        crf: int = DEFAULT_CRF,
        preset: str = "medium",
        odd_size: str = "pad",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        import av

        if odd_size not in ("pad", "crop"):
            raise ValueError(f"odd_size must be 'pad' or 'crop', got {odd_size!r}")
        tags = _check_metadata(metadata)
        self.path = check_output_path(path)
        self.fps = _exact_fps(fps)
        self.num_frames = 0
        self._odd_size = odd_size
        self._size: tuple[int, int] | None = None
        self._temporary = partial_path(self.path)
        self._closed = False
        container_format = _CONTAINER_FORMATS[self.path.suffix.lower()]
        # MP4/MOV keep arbitrary tag names only with this muxer flag (else just the few iTunes-style keys).
        options = {"movflags": "use_metadata_tags"} if tags and container_format in ("mp4", "mov") else {}
        self._container = av.open(str(self._temporary), mode="w", format=container_format, options=options)
        try:
            self._container.metadata.update(tags)
            self._video = self._add_video_stream(crf, preset)
            self._audio_samples, self._audio_rate, self._audio = self._add_audio_stream(audio)
        except BaseException:
            self.abort()
            raise
        self._audio_sent = 0

    # -- setup

    def _add_video_stream(self, crf: int, preset: str) -> Any:
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(int(crf)), "preset": preset, "x264-params": "cpu-independent=1"}
        stream.codec_context.thread_type = "FRAME"  # PyAV's default, slices, also follows the CPU count
        stream.codec_context.thread_count = ENCODER_THREADS
        self._time_base = Fraction(1, self.fps.numerator)
        stream.codec_context.time_base = self._time_base
        stream.time_base = self._time_base
        context = stream.codec_context
        context.color_range, context.colorspace, context.color_primaries, context.color_trc = 1, 1, 1, 1
        return stream

    def _add_audio_stream(self, audio: tuple[np.ndarray, int] | None) -> tuple[np.ndarray | None, int, Any]:
        if audio is None:
            return None, 0, None
        waveform, rate = audio
        samples = np.asarray(waveform, dtype=np.float32)
        if samples.ndim == 1:
            samples = samples[None]
        if samples.ndim != 2 or samples.shape[0] == 0:
            raise ValueError(f"audio waveform must be [samples] or [channels, samples], got {samples.shape}")
        if samples.shape[0] > 2:
            samples = samples.mean(axis=0, keepdims=True, dtype=np.float32)
        rate = int(rate)
        encode_rate = rate if rate in AAC_SAMPLE_RATES else 48000
        stream = self._container.add_stream("aac", rate=encode_rate)
        stream.layout = "mono" if samples.shape[0] == 1 else "stereo"
        return np.ascontiguousarray(samples), rate, stream

    # -- writing

    def _prepare(self, frames: np.ndarray) -> np.ndarray:
        height, width = frames.shape[1:3]
        if self._odd_size == "crop":
            return frames[:, : height - height % 2, : width - width % 2]
        if height % 2 or width % 2:
            frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        return frames

    def _encode(self, frames: np.ndarray) -> None:
        import av
        from av.video.reformatter import ColorRange, Colorspace

        frames = self._prepare(frames)
        if self._size is None:
            self._size = (frames.shape[2], frames.shape[1])
            if min(self._size) < 2:
                raise InputError(f"video frames of {frames.shape[2]}x{frames.shape[1]} pixels are too small to encode")
            self._video.width, self._video.height = self._size
        step = self.fps.denominator
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture = picture.reformat(
                format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
            )
            picture.pts = self.num_frames * step
            picture.time_base = self._time_base  # the stream's own time base changes when the muxer starts
            for packet in self._video.encode(picture):
                self._container.mux(packet)
            self.num_frames += 1
        self._encode_audio_until(self._samples_for_frames(self.num_frames))

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 RGB frames [n, H, W, 3] (or one frame [H, W, 3]); all frames must share one size."""
        if self._closed:
            raise RuntimeError("this VideoWriter is closed")
        array = np.asarray(frames)
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [n, H, W, 3], got {array.dtype} {array.shape}")
        if len(array) == 0:
            return
        try:
            if self._size is not None and self._prepare(array[:1]).shape[1:3] != self._size[::-1]:
                raise ValueError(f"frame size changed to {array.shape[2]}x{array.shape[1]}")
            self._encode(array)
        except BaseException:
            self.abort()
            raise

    # -- audio

    def _samples_for_frames(self, frames: int) -> int:
        return int(round(Fraction(frames) / self.fps * self._audio_rate)) if self._audio is not None else 0

    def _encode_audio_until(self, target: int) -> None:
        import av

        if self._audio is None or target <= self._audio_sent:
            return
        available = self._audio_samples.shape[1]
        piece = self._audio_samples[:, self._audio_sent : min(target, available)]
        if piece.shape[1] < target - self._audio_sent:  # past the end of the audio: silence
            silence = np.zeros((piece.shape[0], target - self._audio_sent - piece.shape[1]), np.float32)
            piece = np.concatenate([piece, silence], axis=1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="fltp", layout=self._audio.layout.name)
        frame.sample_rate = self._audio_rate
        frame.pts = self._audio_sent
        frame.time_base = Fraction(1, self._audio_rate)
        for packet in self._audio.encode(frame):
            self._container.mux(packet)
        self._audio_sent = target

    # -- finishing

    def close(self) -> Path:
        """Flush everything, finish the file and move it to its final name; returns that path."""
        if self._closed:
            return self.path
        try:
            if self.num_frames == 0:
                raise InputError(f"no video frames were produced for {self.path}; nothing was written")
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                for packet in self._audio.encode(None):
                    self._container.mux(packet)
            self._container.close()
            self._closed = True
            os.replace(self._temporary, self.path)
        except BaseException:
            self.abort()
            raise
        logger.info("wrote %s: %d frames at %s fps", self.path, self.num_frames, self.fps)
        return self.path

    def abort(self) -> None:
        """Discard the video: close the encoder and delete the temporary file. Safe to call twice."""
        if not self._closed:
            self._closed = True
            try:
                self._container.close()
            except Exception:  # the file is being discarded; a failing close must not mask the real error
                logger.debug("closing the discarded video container failed", exc_info=True)
        discard(self._temporary)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    audio: tuple[np.ndarray, int] | None = None,
    crf: int = DEFAULT_CRF,
    *,
    median_filter: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Encode uint8 frame chunks ([n, H, W, 3] each, or single frames) to ``path``; returns the path.

    ``median_filter``: run the original's median post-filter (:mod:`.median_filter`) on the frames first.

    ``metadata``: container tags (str -> str), e.g. ``{"prompt": json.dumps(prompt), "workflow": ...}``.
    """
    if median_filter:
        frames = median_filtered_chunks(frames)
    with VideoWriter(path, fps, audio=audio, crf=crf, metadata=metadata) as writer:
        for chunk in frames:
            writer.write(chunk)
    return writer.path
