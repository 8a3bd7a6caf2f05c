"""Audio files written with PyAV: the codec follows the extension; the file appears only when complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import media
from vexpress_model.errors import InputError
from vexpress_model.inputs.audio import decode_audio
from vexpress_model.outputs.audio import write_audio_file


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".m4a", ".flac", ".ogg"])
@pytest.mark.parametrize("rate, channels", [(44100, 2), (16000, 1)])
def test_round_trip(tmp_path: Path, suffix: str, rate: int, channels: int) -> None:
    source = media.speech_like(0.8, rate, channels)
    path = write_audio_file(tmp_path / f"a{suffix}", source, rate)
    decoded = decode_audio(path)
    assert decoded.num_channels == channels
    assert decoded.duration_s == pytest.approx(0.8, abs=0.03)
    if suffix == ".wav":
        assert decoded.sample_rate == rate
        assert np.abs(decoded.waveform - source).max() <= 1 / 32768 + 1e-7
    assert [p.name for p in tmp_path.iterdir()] == [f"a{suffix}"]


def test_bad_targets(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unsupported extension"):
        write_audio_file(tmp_path / "a.xyz", np.zeros(100, np.float32), 16000)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write the audio file .*file is a file, not a folder"):
        write_audio_file(blocker / "a.wav", np.zeros(100, np.float32), 16000)
    (tmp_path / "taken.wav").mkdir()
    with pytest.raises(InputError, match="taken.wav is a folder; give a file name"):
        write_audio_file(tmp_path / "taken.wav", np.zeros(100, np.float32), 16000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken.wav"]
