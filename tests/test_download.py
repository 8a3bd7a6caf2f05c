"""``vexpress_model.download``: what is needed, where it goes, and the opt-in download (never over the network here:
``huggingface_hub.hf_hub_download`` is replaced by a stand-in)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from vexpress_model import download
from vexpress_model.errors import ModelFolderError


@pytest.fixture
def fake_hub(monkeypatch):
    """A stand-in huggingface_hub whose hf_hub_download writes a small file (or fails like an offline machine)."""
    calls: list[tuple[str, str]] = []
    state = {"offline": False, "fail_after": None}

    def hf_hub_download(repo_id, filename, *, revision="main", local_dir=None, token=None, tqdm_class=None):
        if state["offline"] or (state["fail_after"] is not None and len(calls) >= state["fail_after"]):
            raise OSError("We couldn't connect to 'https://huggingface.co' (offline)")
        calls.append((repo_id, filename))
        if tqdm_class is not None:
            with tqdm_class(total=10, disable=True) as bar:
                bar.update(4)
                bar.update(6)
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f"{repo_id}/{filename}".encode())
        return str(target)

    module = types.ModuleType("huggingface_hub")
    module.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    return calls, state


def test_released_layout_plan_lists_exactly_the_needed_files(tmp_path):
    plan = download.released_layout_plan(tmp_path / "model_ckpts")
    sources = {(p.remote.repo_id, p.remote.path) for p in plan}
    assert ("tk93/V-Express", "denoising_unet.bin") in sources
    assert ("tk93/V-Express", "model_ckpts/insightface_models/models/buffalo_l/det_10g.onnx") in sources
    assert ("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors") in sources
    assert ("facebook/wav2vec2-base-960h", "model.safetensors") in sources
    assert len(plan) == 5 + 1 + 2 + 3 + 1
    destinations = {p.dest.relative_to(tmp_path / "model_ckpts").as_posix() for p in plan}
    assert "v-express/motion_module.bin" in destinations
    assert "insightface_models/models/buffalo_l/det_10g.onnx" in destinations
    assert not any("1k3d68" in d or "w600k" in d or "vocab" in d for d in destinations)  # nothing unused


def test_other_names_count_as_present(tmp_path):
    folder = tmp_path / "v-express"
    folder.mkdir()
    (folder / "reference_net.pth").write_bytes(b"x")  # the pre-June-2024 name
    plan = download.checkpoint_files(folder)
    missing = {p.dest.name for p in download.missing_files(plan)}
    assert "reference_net.bin" not in missing and "denoising_unet.bin" in missing


def test_missing_files_without_download_say_what_goes_where(tmp_path, fake_hub):
    calls, _ = fake_hub
    plan = download.released_layout_plan(tmp_path)
    with pytest.raises(ModelFolderError) as error:
        download.ensure_files(plan, download=False)
    lines = str(error.value).splitlines()
    row = next(line for line in lines if line.split()[0] == "audio_projection.bin")
    assert row.split() == ["audio_projection.bin", "59", "MB", str(tmp_path / "v-express" / "audio_projection.bin")]
    assert "tk93/V-Express" in lines[-1]
    assert calls == []


def test_download_fetches_only_the_missing_files_into_place(tmp_path, fake_hub):
    calls, _ = fake_hub
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    plan = download.checkpoint_files(tmp_path / "vexpress") + download.vae_files(tmp_path / "vae")
    progress = []
    fetched = download.ensure_files(plan, download=True, progress=lambda done, total, label: progress.append(done))
    assert ("stabilityai/sd-vae-ft-mse", "config.json") not in calls
    assert len(fetched) == len(calls) == 6
    assert (tmp_path / "vexpress" / "denoising_unet.bin").read_bytes() == b"tk93/V-Express/denoising_unet.bin"
    assert not list(tmp_path.rglob(".vexpress-download-*")), "staging folders left behind"
    assert progress and progress[-1] == 10
    assert download.ensure_files(plan, download=True) == []  # complete now: nothing to do


def test_offline_download_names_every_file_still_missing(tmp_path, fake_hub):
    _, state = fake_hub
    state["fail_after"] = 2
    plan = download.checkpoint_files(tmp_path / "vexpress")
    with pytest.raises(ModelFolderError) as error:
        download.ensure_files(plan, download=True)
    message = str(error.value)
    assert "offline" in message and "motion_module.bin" in message
    assert str(tmp_path / "vexpress" / "audio_projection.bin") in message
    assert str(tmp_path / "vexpress" / "denoising_unet.bin") not in message  # that one did arrive


def test_a_cancel_raised_by_the_progress_display_is_not_a_download_error(tmp_path, fake_hub):
    class Cancelled(Exception):
        pass

    def progress(done, total, label):
        raise Cancelled("user pressed Cancel")

    with pytest.raises(Cancelled):
        download.ensure_files(download.checkpoint_files(tmp_path), download=True, progress=progress)


def test_plan_for_missing_reuses_parts_found_elsewhere(tmp_path):
    from vexpress_model.models.paths import SHIPPED_UNET_CONFIG, ModelPaths

    found = tmp_path / "found"
    paths = ModelPaths(unet_config=SHIPPED_UNET_CONFIG, denoising_unet=found, reference_net=found,
                       motion_module=found, v_kps_guider=found, audio_projection=found, vae=found, wav2vec2=None)
    plan = download.plan_for_missing(paths, vexpress_dir=tmp_path / "vx", vae_dir=tmp_path / "vae",
                                     wav2vec2_dir=tmp_path / "w2v", insightface_root=tmp_path / "insightface")
    assert {p.remote.repo_id for p in plan} == {"facebook/wav2vec2-base-960h", "tk93/V-Express"}
    assert [p.dest.name for p in plan if p.remote.repo_id == "tk93/V-Express"] == ["det_10g.onnx"]


def test_find_model_folders_accepts_every_layout(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "denoising_unet.bin").write_bytes(b"")
    (tmp_path / "released" / "v-express").mkdir(parents=True)
    (tmp_path / "released" / "v-express" / "denoising_unet.pth").write_bytes(b"")
    (tmp_path / "clone" / "V-Express" / "model_ckpts" / "v-express").mkdir(parents=True)
    (tmp_path / "clone" / "V-Express" / "model_ckpts" / "v-express" / "denoising_unet.safetensors").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / ".hidden" / "v-express").mkdir(parents=True)
    (tmp_path / ".hidden" / "v-express" / "denoising_unet.bin").write_bytes(b"")
    names = [name for name, _ in download.find_model_folders([tmp_path, tmp_path / "missing"])]
    assert names == ["clone/V-Express", "flat", "released"]
    assert download.find_model_folders([tmp_path / "flat"]) == [(".", tmp_path / "flat")]
