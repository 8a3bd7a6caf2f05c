"""Running the node pack inside a ComfyUI checkout, in-process (for ``tests/test_nodes_*.py``).

Needs ``COMFYUI_PATH`` (a ComfyUI checkout, e.g. 0.3.64) and a Python environment with ComfyUI's requirements plus
this pack's (``pip install -r $COMFYUI_PATH/requirements.txt -r requirements.txt``). Without it the tests that use
these fixtures are skipped with a message saying so. Only this helper puts ComfyUI on ``sys.path``; the pack itself
never touches it.

The pack is imported the way ComfyUI's loader does it (``importlib`` with the package's own name), so relative
imports and the pack's ``__init__`` run exactly as in a server; the nodes then use the pack's copy of the library,
``<pack>.vexpress_model`` (see :func:`import_library`). ComfyUI's folders (models, input, output, temp) are
pointed at a temporary directory with a tiny random-weight model in ``models/vexpress/tiny`` and the stand-in face
detector in ``models/insightface/models/buffalo_l``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_MODULE = "vexpress_comfy_pack_under_test"
HOW_TO = (
    "put a ComfyUI checkout (>= 0.3.64) at ../shared/comfyui/ComfyUI beside the repository (or set COMFYUI_PATH) "
    "and run `bash scripts/test.sh`, which builds .venv-comfy (ComfyUI's and this pack's requirements) and runs "
    "these tests with it"
)


def comfyui_path() -> Path | None:
    value = os.environ.get("COMFYUI_PATH")
    if not value:
        return None
    path = Path(value).expanduser()
    return path if (path / "comfy").is_dir() and (path / "folder_paths.py").is_file() else None


def import_comfyui() -> Path:
    """Put ComfyUI on sys.path (CPU mode) or skip the calling test with the how-to."""
    path = comfyui_path()
    if path is None:
        pytest.skip(f"ComfyUI node tests need a ComfyUI checkout: {HOW_TO}")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    for name in ("nodes", "folder_paths", "comfy"):  # a stale module of the same name would shadow ComfyUI's
        module = sys.modules.get(name)
        # A namespace package (ComfyUI's comfy/) has no __file__, only __path__: look at both, or a second call
        # would drop ComfyUI's own, already imported package.
        where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "")
        if module is not None and not str(where or "").startswith(str(path)):
            del sys.modules[name]
    try:
        from comfy.cli_args import args

        args.cpu = True  # before comfy.model_management is imported (no GPU probing, CPU device)
        import comfy.model_management  # noqa: F401
        import comfy_api.latest  # noqa: F401
        import folder_paths  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"ComfyUI at {path} cannot be imported here ({exc}): {HOW_TO}")
    return path


def import_pack() -> ModuleType:
    """The repository imported as a ComfyUI custom-node package (once per session)."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


def import_library(name: str) -> ModuleType:
    """``<pack>.vexpress_model.<name>``: the pack's own copy of the library, the one the nodes import relatively.

    Whatever a test hands to a node (a ``KpsTrack``) or catches from one (``InputError``) must come from this copy:
    a separately imported ``vexpress_model`` defines the same classes as different objects, so ``isinstance`` and
    ``pytest.raises`` would not match them.
    """
    pack = import_pack()
    return importlib.import_module(f"{pack.__name__}.vexpress_model.{name}")


def setup_folders(base: Path, model_source: Path) -> dict[str, Path]:
    """Point ComfyUI's folders at ``base`` and fill it with a tiny model, the fake detector and example inputs."""
    import folder_paths

    from tests.fake_detector import write_fake_buffalo_l

    models = base / "models"
    folders = {name: base / name for name in ("input", "output", "temp")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    folder_paths.set_input_directory(str(folders["input"]))
    folder_paths.set_output_directory(str(folders["output"]))
    folder_paths.set_temp_directory(str(folders["temp"]))
    shutil.copytree(model_source, models / "vexpress" / "tiny", dirs_exist_ok=True)
    write_fake_buffalo_l(models / "insightface")
    for key, sub in (("vexpress", "vexpress"), ("insightface", "insightface"), ("vae", "vae"),
                     ("transformers", "transformers"), ("audio_encoders", "audio_encoders")):
        folder_paths.add_model_folder_path(key, str(models / sub), is_default=True)
    for path in (REPO_ROOT / "example_workflows" / "input").iterdir():
        shutil.copy(path, folders["input"] / path.name)
    folders["models"] = models
    return folders
