"""What the command-line tests check after a run: the written video's streams (``read_video``) and a bad input's
one-line refusal (``run_bad``: exit code 2, one ``error:`` line, no traceback, nothing written). The ``good_args``
fixture they start from is in conftest.py."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from vexpress_model.cli import main


def read_video(path: Path) -> dict:
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        info = {
            "codec": video.codec_context.name,
            "pix_fmt": video.codec_context.pix_fmt,
            "fps": Fraction(video.average_rate),
            "size": (video.codec_context.width, video.codec_context.height),
            "frames": sum(1 for _ in container.decode(video)),
        }
        if audio is not None:
            container.seek(0)
            samples = sum(frame.samples for frame in container.decode(audio))
            info.update(audio_codec=audio.codec_context.name, audio_s=samples / audio.rate, audio_rate=audio.rate,
                        audio_channels=audio.codec_context.channels)
    return info


def run_bad(args: dict[str, str], capsys: pytest.CaptureFixture[str], **changes: str) -> str:
    merged = {**args, **changes}
    argv = [part for key, value in merged.items() for part in ((key, value) if value else (key,))]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    output = Path(merged["--output_path"])
    leftovers = list(output.parent.iterdir()) if output.parent.is_dir() else []
    assert leftovers == [], f"partial output left behind: {leftovers}"
    return lines[0]
