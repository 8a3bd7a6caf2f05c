"""Regenerate the small inputs that ship with the example workflows (``example_workflows/input/``).

Run from the repository root with an environment that has numpy, Pillow, scipy, PyAV, torch and scikit-image,
and with ``espeak-ng`` on the PATH (``apt-get install espeak-ng``)::

    python scripts/make_example_inputs.py

Everything is either public domain or generated here:

* ``vexpress_portrait.jpg`` -- a face-centred square crop of the astronaut photograph shipped with scikit-image
  (``skimage.data.astronaut()``: Eileen Collins, NASA, public domain), 512x512.
* ``vexpress_speech.wav`` / ``vexpress_speech_long.mp3`` -- English sentences spoken by the espeak-ng
  synthesiser, resampled to 16 kHz mono.
* ``vexpress_driving.mp4`` -- a 3 s driving clip made from the same portrait by a slow synthetic head motion
  (shift, tilt and zoom of the crop), with the first 3 s of the speech as its AAC audio track: "the same
  person", for ``no_retarget`` (the README's same-person commands run on it as written).
* ``vexpress_landscape.jpg`` -- the same portrait as an ordinary 960x540 landscape photo with the face off-centre
  (right of the middle): the portrait, scaled down, on a backdrop made by smearing its own edge pixels outwards and
  blurring them. For the full-frame example (FaceCrop -> ... -> SaveVideo pasting back) and ``--full_frame``.
* ``vexpress_driving_other_kps.pth`` -- a synthetic keypoint track of a differently proportioned face (wider
  eyes, lower nose) nodding and turning for 6 s at 30 fps, in the original ``kps.pth`` format (a pickled list
  of float32 (3, 2) arrays): "another person", for ``offset_retarget``.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "example_workflows" / "input"

SHORT_TEXT = "Hello! I am a talking portrait, brought to life by V-Express."
LONG_TEXT = (
    "Hello again. This clip is a little longer, to show how V-Express handles long audio. "
    "The video is generated in overlapping windows of frames, and the networks that are not needed at a stage "
    "can leave the graphics card, so that even a minute of speech fits into a modest amount of memory. "
    "Thank you for listening."
)

# The crop of the 512x512 astronaut photo: the head and shoulders, 290 px square (then resized to 512).
CROP_BOX = (79, 0, 369, 290)


def portrait() -> np.ndarray:
    from PIL import Image
    from skimage import data

    image = Image.fromarray(np.ascontiguousarray(data.astronaut())).crop(CROP_BOX).resize((512, 512), Image.LANCZOS)
    return np.asarray(image)


def landscape(image: np.ndarray, width: int = 960, height: int = 540, side: int = 400, left: int = 470,
              top: int = 110) -> np.ndarray:
    """The portrait (scaled to ``side``) at (``left``, ``top``) of a ``width`` x ``height`` picture whose backdrop
    continues the portrait's edges (repeated, then blurred), so there is no second face and no hard frame."""
    import cv2

    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    canvas = cv2.copyMakeBorder(small, top, height - top - side, left, width - left - side, cv2.BORDER_REPLICATE)
    blurred = cv2.GaussianBlur(canvas, (0, 0), 25)
    inside = np.zeros((height, width), np.float32)
    inside[top + 12 : top + side - 12, left + 12 : left + side - 12] = 1.0
    weight = cv2.GaussianBlur(inside, (0, 0), 6)[:, :, None]
    return np.clip(canvas * weight + blurred * (1.0 - weight), 0, 255).astype(np.uint8)


def speak(text: str) -> np.ndarray:
    """espeak-ng speech as float32 mono at 16 kHz."""
    from scipy.signal import resample_poly

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
        with wave.open(str(path)) as handle:
            rate = handle.getframerate()
            samples = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").astype(np.float32) / 32768
    divisor = math.gcd(16000, rate)
    audio = resample_poly(samples, 16000 // divisor, rate // divisor).astype(np.float32)
    return np.clip(audio / (np.abs(audio).max() + 1e-9) * 0.9, -1, 1)


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((audio * 32767).round().astype("<i2").tobytes())


def write_mp3(path: Path, audio: np.ndarray, rate: int = 16000, bit_rate: int = 48000) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libmp3lame", rate=rate)
        stream.layout = "mono"
        stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(audio[None].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def driving_video(path: Path, image: np.ndarray, seconds: float = 3.0, fps: int = 10, size: int = 256) -> None:
    """The portrait under a slow synthetic head motion, H.264 without audio."""
    import av
    from PIL import Image

    source = Image.fromarray(image)
    count = int(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "30", "preset": "slow"}
        for index in range(count):
            t = index / fps
            angle = 4.0 * math.sin(2 * math.pi * t / 3.0)
            dx = 12.0 * math.sin(2 * math.pi * t / 2.0)
            dy = 6.0 * math.sin(2 * math.pi * t / 1.5 + 0.7)
            zoom = 1.0 + 0.04 * math.sin(2 * math.pi * t / 3.0 + 1.3)
            moved = source.rotate(angle, resample=Image.BICUBIC, translate=(dx, dy), fillcolor=(0, 0, 0))
            margin = 512 * (1 - 1 / zoom) / 2
            moved = moved.crop((margin, margin, 512 - margin, 512 - margin)).resize((size, size), Image.LANCZOS)
            frame = av.VideoFrame.from_ndarray(np.asarray(moved), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def add_audio_track(path: Path, audio: np.ndarray, rate: int = 16000) -> None:
    """Remux ``path`` (video packets copied unchanged) with ``audio`` cut to the video's length as AAC, so that
    ``extract_kps --audio_save_path`` works on the example as the README's same-person scenario runs it."""
    import av

    temporary = path.with_name(f".{path.name}.partial.mp4")
    with av.open(str(path)) as source, av.open(str(temporary), "w") as target:
        video_in = source.streams.video[0]
        video_out = target.add_stream_from_template(video_in)
        seconds = float(video_in.duration * video_in.time_base)
        clip = np.zeros(int(round(seconds * rate)), np.float32)
        clip[: min(len(clip), len(audio))] = audio[: len(clip)]
        audio_out = target.add_stream("aac", rate=rate)
        audio_out.layout = "mono"
        audio_out.bit_rate = 48000
        for packet in source.demux(video_in):
            if packet.dts is not None:
                packet.stream = video_out
                target.mux(packet)
        frame = av.AudioFrame.from_ndarray(clip[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for packet in [*audio_out.encode(frame), *audio_out.encode(None)]:
            target.mux(packet)
    temporary.replace(path)


def other_person_track(seconds: float = 6.0, fps: int = 30) -> np.ndarray:
    """[T, 3, 2] kps (eye on the image left, eye on the image right, nose) of a wider face, in 512x512 pixels."""
    t = np.arange(int(seconds * fps)) / fps
    base = np.array([[196.0, 214.0], [308.0, 210.0], [254.0, 282.0]])
    nod = 9.0 * np.sin(2 * np.pi * t / 2.4)
    turn = 14.0 * np.sin(2 * np.pi * t / 4.0 + 0.5)
    track = np.repeat(base[None], len(t), axis=0)
    track[:, :, 0] += turn[:, None]
    track[:, 2, 0] += 0.6 * turn  # the nose moves further than the eyes when the head turns
    track[:, :, 1] += nod[:, None]
    track[:, 2, 1] += 0.5 * nod
    return track.astype(np.float32)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    image = portrait()
    Image.fromarray(image).save(OUT / "vexpress_portrait.jpg", quality=88, optimize=True)
    shipped = np.asarray(Image.open(OUT / "vexpress_portrait.jpg").convert("RGB"))
    Image.fromarray(landscape(shipped)).save(OUT / "vexpress_landscape.jpg", quality=80, optimize=True)
    speech = speak(SHORT_TEXT)
    write_wav(OUT / "vexpress_speech.wav", speech)
    write_mp3(OUT / "vexpress_speech_long.mp3", speak(LONG_TEXT))
    driving_video(OUT / "vexpress_driving.mp4", image)
    add_audio_track(OUT / "vexpress_driving.mp4", speech)

    import torch

    torch.save([row for row in other_person_track()], str(OUT / "vexpress_driving_other_kps.pth"))
    for path in sorted(OUT.iterdir()):
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
