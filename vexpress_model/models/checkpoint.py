"""Reading weight files safely and loading them strictly.

* :func:`open_checkpoint` opens ``.bin`` / ``.pth`` / ``.pt`` (``torch.load(weights_only=True, mmap=True)``) and
  ``.safetensors`` files as a read-only mapping ``key -> tensor`` whose shapes and dtypes are known without
  reading the data. A file that needs arbitrary unpickling, or is truncated, raises :class:`ModelFolderError`.
* :func:`compare_keys` / :func:`load_strict` check every key and shape and raise
  :class:`CheckpointMismatchError` naming the file, the key, the expected and the found shape.
* :func:`load_strict` assigns the tensors into a module built on the meta device, converting each tensor once to
  the target dtype and device, so no random-initialised copy of the network ever exists and host memory stays
  near the size of the weights.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import mmap
import pickle
import sys
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointMismatchError, ModelFolderError
from ..validation import require_file

logger = logging.getLogger("vexpress.models")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")

_SAFETENSORS_DTYPES = {
    "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _format_shape(shape: Sequence[int] | None) -> str:
    return "absent" if shape is None else "[" + ", ".join(str(int(s)) for s in shape) + "]"


class CheckpointFile(Mapping[str, torch.Tensor]):
    """A weight file as a mapping ``key -> tensor``; ``shape_of`` / ``dtype_of`` read no tensor data.

    ``label`` is the name used in messages (e.g. ``"v-express/denoising_unet.bin"``). A leading ``module.`` (a
    DataParallel/DeepSpeed wrapper) is stripped from every key.
    """

    def __init__(self, path: Path, label: str, tensors: dict[str, torch.Tensor] | None = None,
                 safetensors_handle: object | None = None, renames: dict[str, str] | None = None,
                 file_mapped: bool = False) -> None:
        self.path = path
        self.label = label
        self._tensors = tensors
        self._st = safetensors_handle
        self._names = renames or {}  # our key -> key in the file
        # True when the tensors are private read-only-in-practice mappings of the file (torch.load mmap=True).
        self.file_mapped = file_mapped

    def __getitem__(self, key: str) -> torch.Tensor:
        raw = self._names.get(key, key)
        if self._tensors is not None:
            return self._tensors[raw]
        try:
            return self._st.get_tensor(raw)  # type: ignore[union-attr]
        except Exception as exc:  # safetensors raises its own error type
            raise ModelFolderError(f"{self.path}: cannot read tensor {raw!r} ({exc}); the file is damaged") from exc

    def __iter__(self) -> Iterator[str]:
        return iter(self._names) if self._names else iter(self._raw_keys())

    def __len__(self) -> int:
        return len(self._names) if self._names else len(self._raw_keys())

    def _raw_keys(self) -> list[str]:
        if self._tensors is not None:
            return list(self._tensors)
        return list(self._st.keys())  # type: ignore[union-attr]

    def shape_of(self, key: str) -> tuple[int, ...]:
        raw = self._names.get(key, key)
        if self._tensors is not None:
            return tuple(self._tensors[raw].shape)
        return tuple(self._st.get_slice(raw).get_shape())  # type: ignore[union-attr]

    def dtype_of(self, key: str) -> torch.dtype | None:
        raw = self._names.get(key, key)
        if self._tensors is not None:
            return self._tensors[raw].dtype
        return _SAFETENSORS_DTYPES.get(self._st.get_slice(raw).get_dtype())  # type: ignore[union-attr]

    def dtypes(self) -> set[torch.dtype | None]:
        return {self.dtype_of(k) for k in self}

    def total_bytes(self) -> int:
        total = 0
        for key in self:
            dtype = self.dtype_of(key)
            numel = 1
            for s in self.shape_of(key):
                numel *= s
            total += numel * (dtype.itemsize if dtype is not None else 0)
        return total

    def renamed(self, renames: dict[str, str], label: str | None = None) -> CheckpointFile:
        """A view with other key names: ``renames`` maps each new key to the key in the file."""
        return CheckpointFile(self.path, label or self.label, self._tensors, self._st, renames, self.file_mapped)


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        logger.info("stripping the 'module.' prefix from every key")
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    # Some tools save {"state_dict": {...}} (Lightning, LDM) or {"module": {...}} (DeepSpeed).
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "module", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in obj.items()):
        raise ModelFolderError(
            f"{path}: not a state dict (a mapping of names to tensors); this is not a weight file of the "
            "expected kind -- re-download it"
        )
    return dict(obj)


def open_checkpoint(path: str | Path, label: str | None = None) -> CheckpointFile:
    """Open a weight file without reading its tensor data (memory-mapped where the format allows)."""
    path = Path(path)
    label = label or path.name
    require_file(path, "weight file", "check the path or the model folder", ModelFolderError)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except Exception as exc:  # SafetensorError, OSError
            raise ModelFolderError(
                f"{path}: not a readable safetensors file ({exc}); the download is incomplete or damaged -- "
                "download it again"
            ) from exc
        keys = list(handle.keys())
        if keys and all(k.startswith("module.") for k in keys):
            return CheckpointFile(path, label, None, handle, {k[len("module."):]: k for k in keys})
        return CheckpointFile(path, label, None, handle)
    # Memory-map only with private mappings: with a (user-set) MAP_SHARED default, writing a weight would write
    # into the file.
    use_mmap = getattr(torch.serialization, "get_default_mmap_options", lambda: mmap.MAP_PRIVATE)() == getattr(
        mmap, "MAP_PRIVATE", None) or sys.platform == "win32"
    mapped = False
    try:
        if use_mmap and zipfile.is_zipfile(path):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            mapped = True
        else:
            # Legacy (pre-zip) torch.save files cannot be memory-mapped: read whole (or the zip check fails
            # below with a clear message for a damaged file).
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelFolderError(
            f"{path}: this file holds Python objects besides tensors, and loading it would run arbitrary code. "
            "V-Express weight files are plain state dicts; re-download the file from its official source (or "
            f"convert it to .safetensors with a tool you trust). Detail: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, IndexError, KeyError) as exc:
        size = path.stat().st_size
        detail = str(exc).splitlines()[0].split(". ")[0] if str(exc) else type(exc).__name__
        raise ModelFolderError(
            f"{path} ({size} bytes) is damaged or incomplete (an interrupted download?): {detail}. Download it again."
        ) from exc
    return CheckpointFile(path, label, _strip_prefix(_unwrap(obj, path)), file_mapped=mapped)


@functools.cache
def _madvise() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


_MADV_DONTNEED = 4


def release_file_pages(tensor: torch.Tensor) -> None:
    """Let the kernel drop the resident pages of a memory-mapped file tensor we have copied from.

    Only for tensors of a private, never-written file mapping (``CheckpointFile.file_mapped``): a later access
    re-reads the pages from the file, so nothing is lost. Without this, every page of a file being converted
    (fp16 -> fp32/bf16) stays resident until the whole file is closed, adding up to a file's size to the peak.
    """
    fn = _madvise()
    if fn is None or tensor.device.type != "cpu" or tensor.numel() == 0:
        return
    page = mmap.PAGESIZE
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first, last = -(-start // page) * page, end // page * page
    if last > first:
        fn(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


@dataclass
class KeyReport:
    """Result of comparing a file's keys/shapes with what a network expects."""

    label: str
    missing: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    unexpected: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    bad_dtype: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.bad_dtype)

    def lines(self, limit: int = 5) -> list[str]:
        out: list[str] = []
        for key, shape in self.missing[:limit]:
            out.append(f"missing key {key!r} (expected shape {_format_shape(shape)})")
        if len(self.missing) > limit:
            out.append(f"... and {len(self.missing) - limit} more missing keys")
        for key, expected, found in self.mismatched[:limit]:
            out.append(f"key {key!r}: expected shape {_format_shape(expected)}, found {_format_shape(found)}")
        if len(self.mismatched) > limit:
            out.append(f"... and {len(self.mismatched) - limit} more keys with other shapes")
        for key, shape in self.unexpected[:limit]:
            out.append(f"unexpected key {key!r} (shape {_format_shape(shape)}; expected: absent)")
        if len(self.unexpected) > limit:
            out.append(f"... and {len(self.unexpected) - limit} more unexpected keys")
        for key, dtype in self.bad_dtype[:limit]:
            out.append(f"key {key!r}: dtype {dtype} is not a floating-point weight")
        return out

    def summary(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} with another shape")
        if self.bad_dtype:
            parts.append(f"{len(self.bad_dtype)} with a non-float dtype")
        return "keys: " + ", ".join(parts) if parts else "keys and shapes match"

    def error(self, what: str, path: Path | str | None, hint: str = "") -> CheckpointMismatchError:
        where = f"{self.label} ({path})" if path is not None else self.label
        message = (
            f"{where} does not match the {what}: {self.summary()}: " + "; ".join(self.lines())
            + ". " + (hint or "The file is incomplete, damaged or not the right file: download it again.")
        )
        err = CheckpointMismatchError(message)
        err.file = str(path) if path is not None else self.label  # type: ignore[attr-defined]
        err.report = self  # type: ignore[attr-defined]
        return err


def shape_of(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if isinstance(state, CheckpointFile):
        return state.shape_of(key)
    return tuple(state[key].shape)


def dtype_of(state: Mapping[str, torch.Tensor], key: str) -> torch.dtype | None:
    if isinstance(state, CheckpointFile):
        return state.dtype_of(key)
    return state[key].dtype


def expected_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of ``module`` with its shape (works on the meta device)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def compare_keys(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor], label: str) -> KeyReport:
    report = KeyReport(label)
    for key, shape in expected.items():
        if key not in state:
            report.missing.append((key, shape))
            continue
        found = shape_of(state, key)
        if found != tuple(shape):
            report.mismatched.append((key, tuple(shape), found))
        dtype = dtype_of(state, key)
        if dtype is not None and not dtype.is_floating_point:
            report.bad_dtype.append((key, str(dtype).replace("torch.", "")))
    for key in state:
        if key not in expected:
            report.unexpected.append((key, shape_of(state, key)))
    return report


@dataclass
class Source:
    """One weight file feeding a module: ``keys`` = the module keys it must hold exactly (None = all of them).

    Later sources override earlier ones for the keys they hold (``motion_module.bin`` after
    ``denoising_unet.bin``)."""

    state: Mapping[str, torch.Tensor]
    label: str
    keys: Collection[str] | None = None
    path: Path | None = None
    extra: Mapping[str, Callable[[], torch.Tensor]] = field(default_factory=dict)


def check_sources(module: nn.Module, sources: Sequence[Source], what: str, hint: str = "") -> None:
    """Raise :class:`CheckpointMismatchError` unless every source holds exactly its keys with the right shapes."""
    expected = expected_shapes(module)
    for source in sources:
        wanted = expected if source.keys is None else {k: expected[k] for k in source.keys}
        wanted = {k: s for k, s in wanted.items() if k not in source.extra}
        report = compare_keys(wanted, source.state, source.label)
        if not report.ok:
            raise report.error(what, source.path, hint)


def _is_meta(t: torch.Tensor) -> bool:
    return t.device.type == "meta"


def load_strict(
    module: nn.Module,
    sources: Sequence[Source],
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    what: str,
    hint: str = "",
) -> nn.Module:
    """Check ``sources`` against ``module`` (built on the meta device) and assign their tensors into it.

    Each tensor is converted once, directly to ``dtype`` on ``device`` (an fp16 file loaded as fp16 on the CPU is
    used in place, memory-mapped). Non-float tensors keep their dtype.
    """
    check_sources(module, sources, what, hint)
    device = torch.device(device)
    # key -> (how to get the tensor, whether it is a page of a private file mapping); later sources win.
    getters: dict[str, tuple[Callable[[], torch.Tensor], bool]] = {}
    expected = module.state_dict().keys()
    for source in sources:
        keys = expected if source.keys is None else source.keys
        mapped = bool(getattr(source.state, "file_mapped", False))
        for key in keys:
            if key in source.extra:
                getters[key] = (source.extra[key], False)
            else:
                getters[key] = (lambda s=source.state, k=key: s[k], mapped)
    state: dict[str, torch.Tensor] = {}
    for key, (get, mapped) in getters.items():
        original = get()
        if original.is_floating_point():
            tensor = original.to(device=device, dtype=dtype)
        else:
            tensor = original.to(device=device)
        if mapped and tensor is not original and original.is_contiguous():
            release_file_pages(original)  # copied: its file pages need not stay resident
        state[key] = tensor
    module.load_state_dict(state, strict=True, assign=True)
    if device.type != "meta":
        leftover = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if _is_meta(t)]
        if leftover:
            # A buffer that is not in the state dict (non-persistent) would stay unmaterialised.
            raise CheckpointMismatchError(f"{what}: tensors left on the meta device after loading: {leftover[:5]}")
    module.eval()
    module.requires_grad_(False)
    return module
