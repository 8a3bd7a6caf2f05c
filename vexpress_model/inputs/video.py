"""Reading video files (a driving video for its face keypoints): what the first video track says of itself, and
its frames decoded one at a time, with one-line errors for a damaged file or one that is not a video."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..validation import require_file


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's first video track says of itself."""

    fps: float | None
    width: int
    height: int
    num_frames: int | None
    has_audio: bool = False


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, frame size and (when the container says) frame count of a video file's first video track."""
    import av

    path = require_file(path, "video file", "check --video_path")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} has no video track")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            return VideoInfo(
                fps=float(rate) if rate else None,
                width=int(stream.codec_context.width),
                height=int(stream.codec_context.height),
                num_frames=int(stream.frames) or None,
                has_audio=bool(container.streams.audio),
            )
    except InputError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"video file {path} cannot be read ({reason}); it is damaged or not a video") from None


def iter_video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode a video file's first video track to RGB uint8 frames [H, W, 3], one at a time."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"video file {path} cannot be decoded ({reason}); it is damaged or not a video") from None
