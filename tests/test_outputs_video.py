"""The original's median post-filter and uint8 conversion, and the atomic H.264 + AAC writer."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests import media
from vexpress_model.errors import InputError
from vexpress_model.outputs.median_filter import MedianFilterStream, median_filter_3d
from vexpress_model.outputs.video import (
    VideoWriter,
    check_output_path,
    to_uint8,
    video_tensor_to_frames,
    write_video,
)

CASES = ("S1_fix_face", "S2_no_retarget")


def _frames(count: int, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth moving gradients (compress well, so the test videos stay small and fast)."""
    y, x = np.mgrid[0:height, 0:width]
    t = np.arange(count)[:, None, None]
    base = (x[None] * 3 + y[None] * 2 + t * 5 + seed) % 256
    return np.stack([base, (base + 85) % 256, (base + 170) % 256], axis=-1).astype(np.uint8)


def _probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info = {
            "codec": video.codec_context.name,
            "pix_fmt": video.codec_context.format.name,
            "size": (video.codec_context.width, video.codec_context.height),
            "rate": video.average_rate,
            "frames": sum(1 for _ in container.decode(video)),
            "video_s": float(video.duration * video.time_base),
        }
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            info.update(audio_codec=audio.codec_context.name, audio_s=float(audio.duration * audio.time_base),
                        audio_rate=audio.rate, channels=audio.codec_context.channels)
    return info


@pytest.mark.parametrize("case", CASES)
def test_median_filter_and_truncation_match_the_original(parity_dir: Path, case: str) -> None:
    outputs = parity_dir / "outputs" / case
    frames = to_uint8(video_tensor_to_frames(np.load(outputs / "video_float.npy")), compat="original")
    np.testing.assert_array_equal(frames, np.load(outputs / "frames_uint8.npy"))
    np.testing.assert_array_equal(median_filter_3d(frames), np.load(outputs / "frames_filtered_uint8.npy"))


@pytest.mark.parametrize("chunk", [1, 2, 5, 40])
def test_streamed_median_filter_equals_the_whole(parity_dir: Path, chunk: int) -> None:
    frames = np.load(parity_dir / "outputs" / "S2_no_retarget" / "frames_uint8.npy")
    stream = MedianFilterStream()
    pieces = [stream.push(frames[i : i + chunk]) for i in range(0, len(frames), chunk)] + [stream.flush()]
    np.testing.assert_array_equal(np.concatenate([p for p in pieces if len(p)]), median_filter_3d(frames))


def test_streamed_median_filter_on_one_frame() -> None:
    frame = _frames(1)
    stream = MedianFilterStream()
    assert len(stream.push(frame)) == 0
    np.testing.assert_array_equal(stream.flush(), median_filter_3d(frame))


def test_uint8_conversion() -> None:
    values = np.array([0.0, 0.5, 0.999, 1.0, 1.2, -0.1], np.float32)
    np.testing.assert_array_equal(to_uint8(values[:4], "original"), [0, 127, 254, 255])
    np.testing.assert_array_equal(to_uint8(values, "fixed"), [0, 128, 255, 255, 255, 0])


def test_h264_aac_in_one_file_with_exact_fps(tmp_path: Path) -> None:
    """32 frames at 320/11 fps (the original's 29.09) with 1.1 s of audio, streamed in chunks of 5."""
    audio = media.speech_like(1.1, 16000)
    frames = _frames(32)
    path = write_video(tmp_path / "out.mp4", (frames[i : i + 5] for i in range(0, 32, 5)), 32 / 1.1, (audio, 16000))
    info = _probe(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["rate"] == Fraction(320, 11) and info["frames"] == 32 and info["size"] == (64, 64)
    assert info["video_s"] == pytest.approx(1.1, abs=1e-6)
    assert info["audio_codec"] == "aac" and info["audio_s"] == pytest.approx(1.1, abs=1 / 29)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


@pytest.mark.parametrize("audio_seconds", [0.5, 2.5])
def test_audio_is_cut_or_padded_to_the_video(tmp_path: Path, audio_seconds: float) -> None:
    audio = media.speech_like(audio_seconds, 44100, 2)
    path = write_video(tmp_path / "out.mp4", [_frames(24)], 24, (audio, 44100))
    info = _probe(path)
    assert info["frames"] == 24 and info["audio_rate"] == 44100 and info["channels"] == 2
    assert info["audio_s"] == pytest.approx(1.0, abs=1 / 24)


def test_unusual_audio_rate_and_no_audio(tmp_path: Path) -> None:
    path = write_video(tmp_path / "odd_rate.mp4", [_frames(10)], 25, (media.speech_like(0.4, 37000), 37000))
    assert _probe(path)["audio_s"] == pytest.approx(0.4, abs=1 / 25)
    silent = write_video(tmp_path / "silent.mp4", [_frames(10)], 25)
    assert "audio_codec" not in _probe(silent)


@pytest.mark.parametrize("odd_size, expected", [("pad", (66, 64)), ("crop", (64, 62))])
def test_odd_sizes(tmp_path: Path, odd_size: str, expected: tuple[int, int]) -> None:
    frames = _frames(6, height=63, width=65)
    with VideoWriter(tmp_path / "odd.mp4", 25, odd_size=odd_size) as writer:
        writer.write(frames)
    assert _probe(writer.path)["size"] == expected


def test_video_content_survives(tmp_path: Path) -> None:
    frames = _frames(12)
    path = write_video(tmp_path / "out.mp4", [frames], 30, crf=0)
    with av.open(str(path)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert np.abs(decoded.astype(int) - frames).mean() < 6  # 4:2:0 chroma and YUV rounding only


def test_median_filter_option(tmp_path: Path) -> None:
    frames = _frames(9)
    path = write_video(tmp_path / "out.mp4", [frames[:4], frames[4:]], 30, median_filter=True)
    assert _probe(path)["frames"] == 9


def test_a_failed_run_leaves_no_file(tmp_path: Path) -> None:
    def frames_then_crash():
        yield _frames(5)
        raise RuntimeError("the pipeline failed")

    with pytest.raises(RuntimeError, match="pipeline failed"):
        write_video(tmp_path / "out.mp4", frames_then_crash(), 25, (np.zeros(16000, np.float32), 16000))
    assert list(tmp_path.iterdir()) == []


def test_bad_frames_abort_the_file(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "out.mp4", 25)
    writer.write(_frames(3))
    with pytest.raises(ValueError, match="size changed"):
        writer.write(_frames(3, height=32))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="uint8"):
        VideoWriter(tmp_path / "out.mp4", 25).write(np.zeros((2, 8, 8, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_no_frames_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no video frames"):
        write_video(tmp_path / "out.mp4", [], 25)
    assert list(tmp_path.iterdir()) == []


def test_output_paths(tmp_path: Path) -> None:
    nested = check_output_path(tmp_path / "a" / "b" / "out.mp4")
    assert nested.parent.is_dir()
    with pytest.raises(InputError, match=r"\.mp4"):
        check_output_path(tmp_path / "out.gif")
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        check_output_path(tmp_path / "folder.mp4")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        VideoWriter(blocker / "out.mp4", 25)


def test_read_only_folder(tmp_path: Path) -> None:
    """A folder the process may not write into. File modes do not stop root (as CI runs), so root gets the top of
    sysfs instead, where the kernel lets nobody create a file; everyone else a folder of mode 0o500."""
    if os.geteuid() == 0:
        assert Path("/sys").is_dir(), "the test needs Linux's /sys when run as root"
        with pytest.raises(InputError, match="cannot write"):
            check_output_path(Path("/sys") / "out.mp4")
        assert not (Path("/sys") / "out.mp4").exists()
        return
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot write"):
            check_output_path(folder / "out.mp4")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_nothing_appears_under_the_name_before_close(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    writer = VideoWriter(target, 25)
    writer.write(_frames(4))
    assert not target.exists()
    assert writer.close() == target and target.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_metadata_is_written_into_the_container(tmp_path: Path) -> None:
    """ComfyUI's prompt and workflow JSON (any key, non-ASCII included) survive a round trip through PyAV."""
    import json

    prompt = json.dumps({"3": {"class_type": "VExpressSampler", "inputs": {"seed": 42, "text": "café"}}},
                        ensure_ascii=False)
    workflow = json.dumps({"nodes": [{"id": i, "type": "Node", "widgets_values": ["x" * 50]} for i in range(500)]})
    tags = {"prompt": prompt, "workflow": workflow, "comment": "x"}
    path = write_video(tmp_path / "out.mp4", [_frames(4)], 25, (media.speech_like(0.2, 16000), 16000),
                       metadata=tags)
    with av.open(str(path)) as container:
        stored = dict(container.metadata)
        assert sum(1 for _ in container.decode(video=0)) == 4
    assert {key: stored.get(key) for key in tags} == tags
    assert json.loads(stored["prompt"])["3"]["inputs"]["text"] == "café"
    # .mov takes the same muxer flag; Matroska keeps tags natively (FFmpeg reads the names back upper-cased).
    for name in ("out.mov", "out.mkv"):
        with VideoWriter(tmp_path / name, 25, metadata={"prompt": prompt}) as writer:
            writer.write(_frames(2))
        with av.open(str(writer.path)) as container:
            assert {k.lower(): v for k, v in container.metadata.items()}["prompt"] == prompt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mkv", "out.mov", "out.mp4"]


def test_no_metadata_writes_no_custom_tags(tmp_path: Path) -> None:
    path = write_video(tmp_path / "out.mp4", [_frames(2)], 25, metadata={})
    with av.open(str(path)) as container:
        assert "prompt" not in container.metadata


@pytest.mark.parametrize("metadata", [{"prompt": {"a": 1}}, {"": "x"}, {1: "x"}, {"comment": "a\0b"}])
def test_bad_metadata_is_refused_before_anything_is_written(tmp_path: Path, metadata: dict) -> None:
    with pytest.raises(ValueError, match="metadata"):
        VideoWriter(tmp_path / "out.mp4", 25, metadata=metadata)
    assert list(tmp_path.iterdir()) == []


def test_median_filtered_chunks_equal_the_whole_clip_filter():
    from vexpress_model.outputs.median_filter import median_filter_3d, median_filtered_chunks

    frames = np.random.default_rng(1).integers(0, 256, (11, 6, 5, 3), dtype=np.uint8)
    for sizes in ((11,), (1,) * 11, (3, 4, 4), (2, 1, 8)):
        chunks, start = [], 0
        for size in sizes:
            chunks.append(frames[start : start + size])
            start += size
        assert np.array_equal(np.concatenate(list(median_filtered_chunks(chunks))), median_filter_3d(frames))


_ENCODE_IN_A_CHILD = """
import os, sys
import numpy as np
from PIL import Image
from vexpress_model.outputs.video import write_video

os.sched_setaffinity(0, {int(cpu) for cpu in sys.argv[2].split(",")})
photo = np.asarray(Image.open(sys.argv[4]).convert("RGB"))
# Real footage: a window panning over the example photo (x264's motion search and macroblock tree at work).
frames = np.stack([photo[40 + 2 * i : 280 + 2 * i, 100 + 5 * i : 420 + 5 * i] for i in range(24)])
chunk = int(sys.argv[3])
audio = (np.sin(np.arange(16000) / 9.0).astype(np.float32) * 0.3, 16000)
for run in range(int(sys.argv[5])):
    chunks = (frames[i : i + chunk] for i in range(0, len(frames), chunk))
    write_video(f"{sys.argv[1]}.{run}.mp4", chunks, 25.0, audio=audio, crf=17)
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_the_same_frames_give_the_same_bytes_in_any_process_layout(tmp_path: Path) -> None:
    """Real footage encoded three times in one process and once in another, one process pinned to a single CPU
    with one thread everywhere, the other on every CPU, fed in different chunk sizes: byte-identical MP4s."""
    import subprocess
    import sys

    photo = Path(__file__).resolve().parents[1] / "example_workflows" / "input" / "vexpress_landscape.jpg"
    every_cpu = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0)))
    one_cpu = every_cpu.split(",")[0]
    layouts = [
        (one_cpu, "1", "3", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
        (every_cpu, "5", "1", {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}),
    ]
    for index, (cpus, chunk, runs, env) in enumerate(layouts):
        subprocess.run([sys.executable, "-c", _ENCODE_IN_A_CHILD, str(tmp_path / f"layout{index}"), cpus, chunk,
                        str(photo), runs], env={**os.environ, **env}, check=True, timeout=300)
    outputs = [path.read_bytes() for path in sorted(tmp_path.glob("layout*.mp4"))]
    assert len(outputs) == 4 and len(outputs[0]) > 1000
    assert all(output == outputs[0] for output in outputs[1:])
