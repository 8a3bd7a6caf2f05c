"""Keypoint tracks: the three V-Kps points per frame, their files, and a loader that runs no foreign code.

A track is float32 pixel coordinates ``[T, 3, 2]`` (x, y) of the eye on the image left, the eye on the image
right and the nose tip (insightface ``kps[:3]`` order), plus the frame rate and frame size they were taken at
when known.

File formats read by :func:`load_kps` (chosen by content, not by name):

* the original V-Express ``kps.pth``: ``torch.save`` of a Python list of float32 ``(3, 2)`` numpy arrays
  (a zip holding ``data.pkl``), or the same list as a plain pickle or in torch's legacy (pre-zip) format.
  These are pickles, and loading a pickle can run arbitrary code, so they go through a restricted unpickler
  that admits numpy arrays (and the few helpers numpy needs to rebuild them), lists, tuples and plain
  numbers; anything else is refused before it is built. A ``.pth`` of torch tensors is read with
  ``torch.load(weights_only=True)``, which is safe too. No fps or frame size is stored in this format.
* ours, ``.npz`` (``points``, ``fps``, ``width``, ``height``; read with ``allow_pickle=False``) or ``.json``
  (``{"format": "vexpress-kps", "points": [...], "fps": .., "width": .., "height": ..}``);
* the reference-kps JSON of the parity inputs: ``[[x, y], [x, y], [x, y]]`` (one frame), or a list of such
  frames.
"""

from __future__ import annotations

import io
import json
import logging
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files import require_writable_file, write_bytes_atomically
from ..validation import require_file

logger = logging.getLogger("vexpress.inputs")

KPS_JSON_FORMAT = "vexpress-kps"
KPS_FORMAT_VERSION = 1

# Everything a pickled list of numpy arrays needs, under numpy 1.x and 2.x names. Nothing here can reach the
# file system, the network or the interpreter: these only rebuild arrays, dtypes and numpy scalars.
_SAFE_PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_NUMPY2_RECONSTRUCT = b"cnumpy._core.multiarray\n_reconstruct\n"
_NUMPY1_RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\n"


@dataclass(frozen=True)
class KpsTrack:
    """A keypoint track: ``points`` float32 [T, 3, 2] in pixels of a ``width`` x ``height`` frame at ``fps``.

    ``fps``, ``width`` and ``height`` are None when unknown (the original file format stores none of them).
    """

    points: np.ndarray
    fps: float | None = None
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        points = np.ascontiguousarray(np.asarray(self.points, dtype=np.float32))
        if points.ndim != 3 or points.shape[1:] != (3, 2) or points.shape[0] == 0:
            raise InputError(f"KpsTrack points must have shape (T>0, 3, 2), got {points.shape}")
        if not np.isfinite(points).all():
            raise InputError("KpsTrack points must be finite numbers")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise InputError(f"KpsTrack fps must be a positive number or None, got {self.fps}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and int(value) <= 0:
                raise InputError(f"KpsTrack {name} must be a positive integer or None, got {value}")
        points.setflags(write=False)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "fps", None if self.fps is None else float(self.fps))
        object.__setattr__(self, "width", None if self.width is None else int(self.width))
        object.__setattr__(self, "height", None if self.height is None else int(self.height))

    def __repr__(self) -> str:
        return f"KpsTrack(frames={self.num_frames}, fps={self.fps}, width={self.width}, height={self.height})"

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def duration_s(self) -> float | None:
        """Length in seconds (frames / fps), or None when the fps is unknown."""
        return None if self.fps is None else self.num_frames / self.fps


# ----------------------------------------------------------------------------------------------- reading


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only numpy arrays, lists, tuples, dicts and plain values; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" or module.startswith("torch."):
            raise _TorchPayload()  # tensors: left to torch's own weights-only loader
        if (module, name) not in _SAFE_PICKLE_GLOBALS:
            raise _UnsafePickle(f"{module}.{name}")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise _TorchPayload()


class _UnsafePickle(Exception):
    pass


class _TorchPayload(Exception):
    pass


def _restricted_loads(data: bytes, path: Path) -> list[Any]:
    """Every object pickled back to back in ``data`` (torch's legacy format holds several)."""
    stream = io.BytesIO(data)
    objects = []
    try:
        while stream.tell() < len(data):
            objects.append(_RestrictedUnpickler(stream).load())
    except _UnsafePickle as exc:
        raise InputError(
            f"kps file {path} contains a Python object of type {exc}, which a kps file never holds; it was not "
            "loaded (it could run code). Use a kps file written by V-Express or by `python -m "
            "vexpress_model.extract_kps`."
        ) from None
    except _TorchPayload:
        raise
    except Exception as exc:  # truncated or corrupt pickle data
        raise InputError(f"kps file {path} is corrupt or not a kps file ({exc}); extract the kps again") from None
    return objects


def _load_torch_zip(path: Path) -> Any:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith("data.pkl")]
            if len(names) != 1:
                raise InputError(f"kps file {path} is a zip file but not a torch.save file (no single data.pkl)")
            data = archive.read(names[0])
    except zipfile.BadZipFile as exc:
        raise InputError(f"kps file {path} is a damaged zip file ({exc}); extract the kps again") from None
    try:
        objects = _restricted_loads(data, path)
    except _TorchPayload:
        return _load_torch_tensors(path)
    return objects[0]


def _load_torch_tensors(path: Path) -> Any:
    """A ``.pth`` holding torch tensors: torch's own weights-only loader is safe for those."""
    try:
        import torch
    except ImportError:
        raise InputError(f"kps file {path} holds torch tensors; reading it needs PyTorch installed") from None
    try:
        value = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"kps file {path} could not be read safely ({exc}); extract the kps again") from None
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float32).numpy()
    if isinstance(value, (list, tuple)):
        return [v.detach().to(torch.float32).numpy() if isinstance(v, torch.Tensor) else v for v in value]
    return value


def _load_plain_pickle(path: Path, data: bytes) -> Any:
    try:
        objects = _restricted_loads(data, path)
    except _TorchPayload:
        return _load_torch_tensors(path)
    if len(objects) >= 4 and objects[0] == _TORCH_LEGACY_MAGIC:
        return objects[3]  # torch's legacy format: magic, protocol, system info, the object, storage keys
    return objects[0]


def _points_from_object(value: Any, path: Path) -> np.ndarray:
    """[T, 3, 2] float32 from a list of (3, 2) arrays (or (5, 2) insightface kps), or one [T, 3, 2] array."""
    try:
        if isinstance(value, np.ndarray):
            array = value
        elif isinstance(value, (list, tuple)):
            if len(value) == 0:
                raise InputError(f"kps file {path} holds an empty list: no frames; extract the kps again")
            frames = [np.asarray(item) for item in value]
            if any(f.dtype == object for f in frames):
                raise ValueError("non-numeric entries")
            array = np.stack(frames)
        else:
            raise ValueError(f"a {type(value).__name__}")
        if array.dtype.kind not in "fiu":
            raise ValueError(f"values of type {array.dtype}")
        if array.ndim == 2 and array.shape[0] in (3, 5):
            array = array[None]
        if array.ndim != 3 or array.shape[1] not in (3, 5) or array.shape[2] != 2:
            raise ValueError(f"shape {tuple(array.shape)}")
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(
            f"kps file {path} is not a kps track: expected a list of (3, 2) arrays of eye, eye and nose pixel "
            f"coordinates, found {exc}; extract the kps again with `python -m vexpress_model.extract_kps`"
        ) from None
    points = array[:, :3].astype(np.float32)
    if not np.isfinite(points).all():
        raise InputError(f"kps file {path} contains NaN or infinite coordinates; extract the kps again")
    return points


def _is_npz(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "points.npy" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _npz_arrays(path: Path) -> list[str]:
    """The array names of a numpy ``.npz`` archive (its ``<name>.npy`` members); [] for any other zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return []
    if not names or not all(name.endswith(".npy") for name in names):
        return []
    return [name[: -len(".npy")] for name in names]


def _load_npz(path: Path) -> KpsTrack:
    try:
        with np.load(path, allow_pickle=False) as data:
            points = _points_from_object(data["points"], path)
            fps = float(data["fps"]) if "fps" in data else math.nan
            width = int(data["width"]) if "width" in data else -1
            height = int(data["height"]) if "height" in data else -1
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"kps file {path} is not a V-Express .npz kps file ({exc}); extract the kps again") from None
    return _make_track(points, fps if math.isfinite(fps) and fps > 0 else None, width, height, path)


def _load_json(path: Path, text: str) -> KpsTrack:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"kps file {path} is not valid JSON ({exc})") from None
    if isinstance(value, dict):
        if "points" not in value:
            raise InputError(f"kps file {path}: JSON object without a 'points' entry")
        points = _points_from_object(_json_array(value["points"], path), path)
        return _make_track(points, value.get("fps"), value.get("width"), value.get("height"), path)
    return _make_track(_points_from_object(_json_array(value, path), path), None, None, None, path)


def _json_array(value: Any, path: Path) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"kps file {path}: 'points' must be numbers in the form [[x, y], [x, y], [x, y]] per frame"
        ) from None
    return array


def _make_track(points: np.ndarray, fps: Any, width: Any, height: Any, path: Path) -> KpsTrack:
    try:
        return KpsTrack(
            points,
            fps=None if fps is None else float(fps),
            width=None if width is None or int(width) <= 0 else int(width),
            height=None if height is None or int(height) <= 0 else int(height),
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"kps file {path}: {exc}") from None


def load_kps(path: str | Path) -> KpsTrack:
    """Read a kps track from any supported file (see the module docstring); bad files raise InputError."""
    path = require_file(path, "kps file", "check --kps_path")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"kps file {path} cannot be read ({exc.strerror})") from None
    if not data:
        raise InputError(f"kps file {path} is empty; extract the kps again")
    if data[:4] == b"PK\x03\x04":
        if _is_npz(path):
            return _load_npz(path)
        arrays = _npz_arrays(path)
        if arrays:
            raise InputError(
                f"kps file {path} is a .npz archive without a 'points' array (it holds {', '.join(arrays)}); save "
                "the [frames, 3, 2] points under that name (np.savez(path, points=...)) or extract the kps with "
                "`python -m vexpress_model.extract_kps`"
            )
        track = _make_track(_points_from_object(_load_torch_zip(path), path), None, None, None, path)
    elif data[:1] == b"\x80":
        track = _make_track(_points_from_object(_load_plain_pickle(path, data), path), None, None, None, path)
    elif data.lstrip()[:1] in (b"[", b"{"):
        return _load_json(path, data.decode("utf-8", errors="replace"))
    else:
        raise InputError(
            f"kps file {path} is neither a V-Express kps file (.pth) nor one of ours (.npz, .json); "
            "extract the kps with `python -m vexpress_model.extract_kps`"
        )
    logger.debug("read %d kps frames from %s (original format)", track.num_frames, path)
    return track


def load_reference_kps(path: str | Path) -> np.ndarray:
    """Reference keypoints [3, 2] float32 from a file holding exactly one frame (e.g. ``[[x, y], x3]`` JSON)."""
    track = load_kps(path)
    if track.num_frames != 1:
        raise InputError(
            f"reference kps file {path} holds {track.num_frames} frames; a reference kps file holds one frame "
            "[[x, y], [x, y], [x, y]] (eye on the image left, eye on the image right, nose tip)"
        )
    return track.points[0].copy()


def scale_points(points: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Keypoints [..., 2] measured on an image of ``from_size`` (w, h), in pixels of ``to_size`` (w, h)."""
    factor = np.array(to_size, dtype=np.float64) / np.array(from_size, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) * factor).astype(np.float32)


def check_points_in_frame(points: np.ndarray, width: int, height: int, name: str) -> np.ndarray:
    """Refuse keypoints far outside the ``width`` x ``height`` frame; warn about points a little outside.

    A face cut by the border has a point or two just outside the frame, which works; a point more than half a
    frame outside is a unit or coordinate-space mistake (normalised vs pixel, another image size).
    """
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    size = np.array([width, height], dtype=np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{name} holds NaN or infinite coordinates; give pixel coordinates")
    below, above = array < 0, array > size
    if ((array < -size / 2) | (array > 1.5 * size)).any():
        worst = array[np.abs(array - size / 2).max(axis=1).argmax()]
        raise InputError(
            f"{name} has a point at ({worst[0]:g}, {worst[1]:g}), far outside the {width}x{height} frame; "
            "give the keypoints in pixels of that frame"
        )
    if (below | above).any():
        logger.warning("%s has points outside the %dx%d frame (a face cut by the border?)", name, width, height)
    return np.asarray(points)


# ----------------------------------------------------------------------------------------------- writing


def save_kps(path: str | Path, track: KpsTrack, fmt: str | None = None) -> Path:
    """Write our safe format, ``fmt`` "npz" or "json" (None: json for ``.json`` names, else npz).

    Both hold the points, fps, width and height.
    """
    path = Path(path)
    require_writable_file(path, "kps file")
    fmt = fmt or ("json" if path.suffix.lower() == ".json" else "npz")
    if fmt not in ("npz", "json"):
        raise InputError(f"fmt must be 'npz' or 'json', got {fmt!r}")
    if fmt == "json":
        document = {
            "format": KPS_JSON_FORMAT,
            "version": KPS_FORMAT_VERSION,
            "fps": track.fps,
            "width": track.width,
            "height": track.height,
            "points": track.points.tolist(),
        }
        write_bytes_atomically(path, json.dumps(document).encode("utf-8"), "kps file")
        return path
    buffer = io.BytesIO()
    np.savez(
        buffer,
        points=track.points,
        fps=np.float64(math.nan if track.fps is None else track.fps),
        width=np.int64(-1 if track.width is None else track.width),
        height=np.int64(-1 if track.height is None else track.height),
        version=np.int64(KPS_FORMAT_VERSION),
    )
    write_bytes_atomically(path, buffer.getvalue(), "kps file")
    return path


class _OriginalFormatPickler:
    """A ``pickle_module.Pickler`` for ``torch.save``: the original's list of arrays, readable by numpy 1 and 2.

    numpy 2 pickles arrays as ``numpy._core.multiarray._reconstruct``, a name numpy 1.x (the original
    V-Express environment) cannot import; the same function under its numpy 1 name loads in both.
    """

    def __init__(self, file: Any, protocol: int | None = None) -> None:
        self._file = file

    def persistent_id(self, obj: Any) -> None:
        return None

    def dump(self, obj: Any) -> None:
        payload = pickle.dumps(obj, protocol=2)
        payload = payload.replace(_NUMPY2_RECONSTRUCT, _NUMPY1_RECONSTRUCT)
        self._file.write(payload)


class _OriginalFormatPickleModule:
    Pickler = _OriginalFormatPickler
    Unpickler = pickle.Unpickler
    load = staticmethod(pickle.load)


def save_kps_original(path: str | Path, track: KpsTrack) -> Path:
    """Write the original ``kps.pth`` format (``torch.save`` of a list of float32 (3, 2) arrays).

    fps and frame size are not stored (the format has no place for them).
    """
    import torch

    path = Path(path)
    require_writable_file(path, "kps file")
    frames = [np.array(frame, dtype=np.float32) for frame in track.points]
    buffer = io.BytesIO()
    torch.save(frames, buffer, pickle_module=_OriginalFormatPickleModule, pickle_protocol=2)
    write_bytes_atomically(path, buffer.getvalue(), "kps file")
    return path
