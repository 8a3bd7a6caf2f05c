"""Input media for tests: a real portrait, speech-like audio in several containers and rates, kps files.

Everything is generated on the fly (deterministically) or comes from scikit-image, so nothing is downloaded
and no media binaries live in the repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

AUDIO_RATES = (16000, 22050, 44100, 48000)
AUDIO_FORMATS = ("wav", "mp3")

# Reference kps of the 512x512 astronaut portrait (eye on the image left, eye on the image right, nose tip),
# placed by hand; used wherever a test needs plausible keypoints for that image.
PORTRAIT_KPS_512 = np.array([[226.0, 148.0], [281.0, 151.0], [253.0, 185.0]], dtype=np.float32)


def portrait_rgb() -> np.ndarray:
    """The public-domain astronaut photograph shipped with scikit-image: 512x512x3 uint8 RGB."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def speech_like(duration_s: float, sample_rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A speech-like test signal, float32 [channels, samples] in [-1, 1].

    Voiced segments (a glottal-pulse-like harmonic source with drifting pitch, shaped by two moving formants)
    alternate with short noise bursts (fricatives) and pauses, so it has the envelope and spectrum changes
    that wav2vec2 features react to. Extra channels get a slightly delayed, attenuated copy.
    """
    rng = np.random.default_rng(seed)
    n = max(int(round(duration_s * sample_rate)), 0)
    t = np.arange(n) / sample_rate
    pitch = 120.0 + 25.0 * np.sin(2 * np.pi * 0.7 * t) + 10.0 * np.sin(2 * np.pi * 2.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    source = np.zeros(n)
    for harmonic in range(1, 25):
        freq = harmonic * pitch
        formant_1 = 700.0 + 300.0 * np.sin(2 * np.pi * 1.1 * t)
        formant_2 = 1800.0 + 500.0 * np.sin(2 * np.pi * 0.8 * t + 1.0)
        gain = np.exp(-(((freq - formant_1) / 250.0) ** 2)) + 0.6 * np.exp(-(((freq - formant_2) / 350.0) ** 2))
        gain += 0.05 / harmonic
        source += gain * np.sin(harmonic * phase) * (freq < sample_rate / 2)
    # Syllable envelope: ~4 syllables per second with pauses between words.
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * t))
    words = (np.sin(2 * np.pi * 0.9 * t + 0.3) > -0.6).astype(float)
    voiced = source * syllables * words
    fricative = rng.standard_normal(n) * ((np.sin(2 * np.pi * 1.7 * t + 2.0) > 0.85).astype(float))
    signal = voiced / (np.abs(voiced).max() + 1e-9) * 0.6 + 0.15 * fricative
    signal = np.clip(signal, -0.95, 0.95).astype(np.float32)
    out = [signal]
    for c in range(1, channels):
        delay = 7 * c
        out.append((0.8 * np.concatenate([np.zeros(delay, np.float32), signal[: n - delay]]))[:n])
    return np.stack(out).astype(np.float32)


def write_audio(path: Path, waveform: np.ndarray, sample_rate: int) -> Path:
    """Write float32 [channels, samples] audio; the container and codec follow the file extension.

    WAV is written as PCM16 with the standard library (so a zero-length file is still a valid WAV);
    compressed formats by the library's own PyAV writer (``vexpress_model.outputs.audio.write_audio_file``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    channels = waveform.shape[0]
    if suffix == ".wav":
        import wave

        samples = (np.clip(waveform, -1, 1) * 32767).round().astype("<i2").T
        with wave.open(str(path), "wb") as handle:
            handle.setnchannels(channels)
            handle.setsampwidth(2)
            handle.setframerate(sample_rate)
            handle.writeframes(np.ascontiguousarray(samples).tobytes())
        return path

    from vexpress_model.outputs.audio import write_audio_file

    return write_audio_file(path, waveform, sample_rate)


def write_kps_original(path: Path, points: np.ndarray) -> Path:
    """Write a kps track in the original on-disk format: `torch.save` of a list of float32 (3, 2) arrays."""
    import torch

    torch.save([np.asarray(p, dtype=np.float32) for p in points], str(path))
    return path


def driving_track(num_frames: int, reference: np.ndarray = PORTRAIT_KPS_512, seed: int = 0) -> np.ndarray:
    """A smooth synthetic head-motion track around `reference`: float32 [num_frames, 3, 2]."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames, dtype=np.float64)[:, None, None]
    shift = np.stack([4.0 * np.sin(t[..., 0] / 9.0), 2.5 * np.sin(t[..., 0] / 13.0 + 1.0)], axis=-1)
    track = reference[None].astype(np.float64) + shift + rng.normal(0, 0.05, (num_frames, 3, 2))
    return track.astype(np.float32)


def write_media_folder(folder: Path) -> Path:
    """Write every standard test input into `folder` and return it.

    portrait.png / portrait.jpg (512x512), speech_<rate>_<mono|stereo>.<wav|mp3> (2.0 s),
    speech_short.wav (0.3 s, 16 kHz), silence.wav, empty.wav (no samples), corrupt.mp3 (garbage bytes),
    driving_kps.pth (original format, 60 frames for the portrait).
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(portrait_rgb())
    image.save(folder / "portrait.png")
    image.save(folder / "portrait.jpg", quality=95)
    for rate in AUDIO_RATES:
        for channels, layout in ((1, "mono"), (2, "stereo")):
            wave = speech_like(2.0, rate, channels, seed=rate)
            for fmt in AUDIO_FORMATS:
                write_audio(folder / f"speech_{rate}_{layout}.{fmt}", wave, rate)
    write_audio(folder / "speech_short.wav", speech_like(0.3, 16000), 16000)
    write_audio(folder / "silence.wav", np.zeros((1, 16000), np.float32), 16000)
    write_audio(folder / "empty.wav", np.zeros((1, 0), np.float32), 16000)
    (folder / "corrupt.mp3").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    write_kps_original(folder / "driving_kps.pth", driving_track(60))
    return folder


def off_centre_photo(width: int, height: int, face_x: float = 0.72, face_y: float = 0.4, seed: int = 0) -> np.ndarray:
    """A ``width`` x ``height`` photo with the astronaut's head and shoulders off-centre: the portrait (scaled to
    60 % of the shorter side) on a smooth, slightly noisy backdrop, its face centre at (face_x, face_y) of the
    picture. RGB uint8 [height, width, 3]."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    backdrop = np.stack([90 + 60 * x / width, 110 + 40 * y / height, 150 - 50 * x / width], axis=-1)
    backdrop += rng.normal(0, 3, backdrop.shape)
    side = int(0.6 * min(width, height))
    portrait = np.asarray(Image.fromarray(portrait_rgb()).resize((side, side), Image.LANCZOS))
    face_centre = np.array([225.0, 115.0]) * side / 512  # the astronaut's face centre in the scaled portrait
    left = int(round(face_x * width - face_centre[0]))
    top = int(round(face_y * height - face_centre[1]))
    image = np.clip(backdrop, 0, 255).astype(np.uint8)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + side, width), min(top + side, height)
    image[y0:y1, x0:x1] = portrait[y0 - top : y1 - top, x0 - left : x1 - left]
    return image


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A 45-byte PNG that claims ``width`` x ``height`` RGB pixels and holds none (signature, IHDR, IEND): what a
    decompression-bomb image looks like to a program that reads the header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return Path(path)
