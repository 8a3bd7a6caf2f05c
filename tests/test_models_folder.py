"""Model folders: the random tiny folder writer, folder layouts (released, ComfyUI, HF clone), file formats, and
``python -m vexpress_model.check_model``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vexpress_model import check_model
from vexpress_model.errors import CheckpointMismatchError, ModelFolderError
from vexpress_model.models import load_vexpress_models, resolve_model_paths
from vexpress_model.models.checkpoint import open_checkpoint
from vexpress_model.models.config import SHIPPED_UNET_CONFIG
from vexpress_model.models.loading import load_audio_projection, load_denoising_unet, load_kps_guider
from vexpress_model.testing.random_model import write_random_model_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
VX_FILES = ("denoising_unet", "reference_net", "motion_module", "v_kps_guider", "audio_projection")


def _copy_with_own_vexpress(src: Path, dest: Path) -> Path:
    """A model folder at ``dest`` whose v-express/ is a private copy (mutable) and the rest symlinks."""
    dest.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name == "v-express":
            shutil.copytree(entry, dest / entry.name)
        else:
            (dest / entry.name).symlink_to(entry, target_is_directory=True)
    return dest


def _check_model(model_dir: Path) -> subprocess.CompletedProcess:
    """``check_model.main`` in-process (the command line itself is run once, below)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = check_model.main(["--model_dir", str(model_dir)])
    return subprocess.CompletedProcess([], code, out.getvalue(), "")


def test_random_tiny_folder_loads_strictly_and_runs(tiny_model_dir):
    models = load_vexpress_models(tiny_model_dir, "fp32", "cpu")
    assert models.constants.kps_guider_conditioning_channels == 32
    unet = models.denoising_unet
    with torch.no_grad():
        bank = models.reference_net(torch.randn(1, 4, 8, 8))
        ctx = unet.prepare_reference(bank)
        out = unet(torch.randn(2, 4, 3, 8, 8), 999, torch.randn(2, 3, 5, 40), torch.randn(2, 32, 3, 8, 8), ctx,
                   uncond=torch.tensor([True, False]))
        kps = models.kps_guider(torch.rand(1, 3, 3, 64, 64))
        tokens = models.audio_projection(torch.randn(3, 10, 48))
    assert out.shape == (2, 4, 3, 8, 8) and torch.isfinite(out).all()
    assert kps.shape == (1, 32, 3, 8, 8) and tokens.shape == (3, 5, 40)
    # motion_module.bin wins over the motion values stored in denoising_unet.bin (they differ by construction)
    key = "mid_block.motion_modules.0.temporal_transformer.proj_out.weight"
    main = open_checkpoint(tiny_model_dir / "v-express" / "denoising_unet.bin")[key].float()
    motion = open_checkpoint(tiny_model_dir / "v-express" / "motion_module.bin")[key].float()
    assert not torch.equal(main, motion) and torch.equal(unet.state_dict()[key], motion)


def test_random_folder_is_deterministic_in_the_seed(tiny_model_dir, tmp_path):
    other = write_random_model_folder(tmp_path / "seed1", size="tiny", seed=1)
    ref0 = torch.load(tiny_model_dir / "v-express" / "audio_projection.bin", weights_only=True)
    ref1 = torch.load(other / "v-express" / "audio_projection.bin", weights_only=True)
    assert all(v.dtype == torch.float16 for v in ref0.values())
    assert not torch.equal(ref0["proj_in.weight"], ref1["proj_in.weight"])
    from vexpress_model.testing.random_model import random_tensor

    again = random_tensor("proj_in.weight", tuple(ref0["proj_in.weight"].shape), "audio_projection.bin", 0)
    assert torch.equal(again.half(), ref0["proj_in.weight"])
    vae = torch.load(tiny_model_dir / "sd-vae-ft-mse" / "diffusion_pytorch_model.bin", weights_only=True)
    assert "encoder.mid_block.attentions.0.query.weight" in vae  # old names, like the real file
    w2v = torch.load(tiny_model_dir / "wav2vec2-base-960h" / "pytorch_model.bin", weights_only=True)
    assert "lm_head.weight" in w2v and "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in w2v


def test_check_model_accepts_a_complete_folder(tiny_model_dir):
    result = _check_model(tiny_model_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: this folder will load" in result.stdout
    assert result.stdout.count("keys and shapes match") == 7


def test_check_model_and_loader_report_a_missing_file(tiny_model_dir, tmp_path):
    folder = _copy_with_own_vexpress(tiny_model_dir, tmp_path / "model_ckpts")
    (folder / "v-express" / "motion_module.bin").unlink()
    result = _check_model(folder)
    assert result.returncode == 1
    assert "[MISSING] v-express/motion_module" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("NOT LOADABLE") and "motion_module.bin" in last and "huggingface.co/tk93/V-Express" in last
    with pytest.raises(ModelFolderError, match="motion_module"):
        load_vexpress_models(folder, "fp32", "cpu")


def test_check_model_and_loader_report_a_removed_key(tiny_model_dir, tmp_path):
    folder = _copy_with_own_vexpress(tiny_model_dir, tmp_path / "model_ckpts")
    path = folder / "v-express" / "audio_projection.bin"
    state = torch.load(path, weights_only=True)
    del state["layers.1.0.to_kv.weight"]
    torch.save(state, path)
    result = _check_model(folder)
    assert result.returncode == 1
    assert "missing key 'layers.1.0.to_kv.weight' (expected shape [48, 40])" in result.stdout
    with pytest.raises(CheckpointMismatchError) as info:
        load_audio_projection(folder, "fp32", "cpu")
    message = str(info.value)
    assert "audio_projection.bin" in message and "'layers.1.0.to_kv.weight'" in message and "[48, 40]" in message


def test_check_model_and_loader_report_a_truncated_file(tiny_model_dir, tmp_path):
    folder = _copy_with_own_vexpress(tiny_model_dir, tmp_path / "model_ckpts")
    path = folder / "v-express" / "reference_net.bin"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = _check_model(folder)
    assert result.returncode == 1
    assert "reference_net.bin" in result.stdout and "damaged or incomplete" in result.stdout
    with pytest.raises(ModelFolderError, match="damaged or incomplete"):
        load_vexpress_models(folder, "fp32", "cpu")


def test_check_model_on_an_empty_folder(tmp_path):
    result = _check_model(tmp_path)
    assert result.returncode == 1
    assert result.stdout.count("[MISSING]") == 7  # five V-Express files, VAE, wav2vec2


class _NotATensor:
    pass


def test_files_needing_arbitrary_unpickling_are_refused(tmp_path):
    path = tmp_path / "v_kps_guider.bin"
    torch.save({"conv_in.weight": torch.zeros(1), "payload": _NotATensor()}, path)
    with pytest.raises(ModelFolderError, match="arbitrary code"):
        open_checkpoint(path)


def test_comfyui_layout_formats_and_prefixes(tiny_model_dir, tmp_path):
    """models/vexpress/ with .safetensors, .pth and .bin files (one with a 'module.' prefix), the UNet config and
    vexpress_config.json beside them; VAE and wav2vec2 found in the community folders."""
    models = tmp_path / "models"
    vx = models / "vexpress"
    vx.mkdir(parents=True)
    src = tiny_model_dir / "v-express"
    save_file(dict(torch.load(src / "audio_projection.bin", weights_only=True)), vx / "audio_projection.safetensors")
    shutil.copyfile(src / "v_kps_guider.bin", vx / "v_kps_guider.pth")
    prefixed = OrderedDict(("module." + k, v) for k, v in torch.load(src / "reference_net.bin",
                                                                       weights_only=True).items())
    torch.save(prefixed, vx / "reference_net.bin")
    for name in ("denoising_unet", "motion_module"):
        (vx / f"{name}.bin").symlink_to(src / f"{name}.bin")
    shutil.copyfile(src / "vexpress_config.json", vx / "vexpress_config.json")
    shutil.copyfile(tiny_model_dir / "stable-diffusion-v1-5" / "unet" / "config.json", vx / "config.json")
    (models / "vae").mkdir()
    (models / "vae" / "sd-vae-ft-mse").symlink_to(tiny_model_dir / "sd-vae-ft-mse", target_is_directory=True)
    (models / "transformers" / "facebook").mkdir(parents=True)
    (models / "transformers" / "facebook" / "wav2vec2-base-960h").symlink_to(
        tiny_model_dir / "wav2vec2-base-960h", target_is_directory=True)
    paths = resolve_model_paths(vx, vae_search_dirs=[models / "vae"],
                                wav2vec2_search_dirs=[models / "audio_encoders", models / "transformers"])
    assert paths.layout == "flat" and paths.unet_config == vx / "config.json"
    assert paths.audio_projection.suffix == ".safetensors" and paths.v_kps_guider.suffix == ".pth"
    loaded = load_vexpress_models(paths, "fp32", "cpu")
    reference = load_vexpress_models(tiny_model_dir, "fp32", "cpu")
    for name in ("reference_net", "audio_projection", "kps_guider"):
        ours, ref = getattr(loaded, name).state_dict(), getattr(reference, name).state_dict()
        assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ours), name

    # Without a config beside the files, the shipped SD-1.5 config is used, and the tiny files do not fit it:
    (vx / "config.json").unlink()
    paths = resolve_model_paths(vx)
    assert paths.unet_config == SHIPPED_UNET_CONFIG
    assert paths.vae is None and paths.wav2vec2 is None
    with pytest.raises(CheckpointMismatchError, match="shipped with the package"):
        load_denoising_unet(paths, "fp32", "cpu")


def test_hf_clone_and_parent_layouts(tiny_model_dir, tmp_path):
    # A clone of tk93/V-Express: the .bin files at the top, model_ckpts/ beside them.
    clone = tmp_path / "V-Express"
    (clone / "model_ckpts").mkdir(parents=True)
    for entry in tiny_model_dir.iterdir():
        if entry.name != "v-express":
            (clone / "model_ckpts" / entry.name).symlink_to(entry, target_is_directory=True)
    for entry in (tiny_model_dir / "v-express").iterdir():
        (clone / entry.name).symlink_to(entry)
    paths = resolve_model_paths(clone)
    assert paths.layout == "flat" and not paths.missing()
    assert paths.unet_config == clone / "model_ckpts" / "stable-diffusion-v1-5" / "unet" / "config.json"
    load_kps_guider(paths, "fp32", "cpu")
    # The folder that holds model_ckpts/ (where the original inference.py runs).
    parent = tiny_model_dir.parent
    assert resolve_model_paths(parent).vexpress_dir == tiny_model_dir / "v-express"


def _hf_clone(tiny_model_dir: Path, clone: Path) -> Path:
    """The shape of a plain ``git clone https://huggingface.co/tk93/V-Express``: the five files at the top,
    ``model_ckpts/`` with the sub-folders and an *empty* ``v-express/`` (its files are copies, so tests may delete)."""
    ckpts = clone / "model_ckpts"
    (ckpts / "v-express").mkdir(parents=True)
    for entry in tiny_model_dir.iterdir():
        if entry.name != "v-express":
            (ckpts / entry.name).symlink_to(entry, target_is_directory=True)
    for name in VX_FILES:
        shutil.copyfile(tiny_model_dir / "v-express" / f"{name}.bin", clone / f"{name}.bin")
    # The tiny widths need their constants; the real clone uses the built-in defaults instead.
    shutil.copyfile(tiny_model_dir / "v-express" / "vexpress_config.json", clone / "vexpress_config.json")
    (clone / "README.md").write_text("V-Express\n")
    return clone


def test_hf_clone_with_an_empty_v_express_folder(tiny_model_dir, tmp_path):
    clone = _hf_clone(tiny_model_dir, tmp_path / "V-Express")
    paths = resolve_model_paths(clone)
    assert not paths.missing(), paths.missing()
    assert all(getattr(paths, name) == clone / f"{name}.bin" for name in VX_FILES)
    assert paths.vexpress_dir == clone and paths.layout == "flat"
    ckpts = clone / "model_ckpts"
    assert paths.unet_config == ckpts / "stable-diffusion-v1-5" / "unet" / "config.json"
    assert paths.vae == ckpts / "sd-vae-ft-mse" and paths.wav2vec2 == ckpts / "wav2vec2-base-960h"
    assert paths.vexpress_config == clone / "vexpress_config.json"
    models = load_vexpress_models(clone, "fp32", "cpu")
    reference = load_vexpress_models(tiny_model_dir, "fp32", "cpu")
    for name in ("reference_net", "audio_projection", "kps_guider", "denoising_unet"):
        ours, ref = getattr(models, name).state_dict(), getattr(reference, name).state_dict()
        assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ours), name
    # The parent of model_ckpts/ given directly finds the same sub-folders.
    assert resolve_model_paths(ckpts).vae == ckpts / "sd-vae-ft-mse"


def test_hf_clone_insightface_under_model_ckpts(tiny_model_dir, tmp_path):
    from tests.fake_detector import write_fake_buffalo_l

    clone = _hf_clone(tiny_model_dir, tmp_path / "V-Express")
    write_fake_buffalo_l(clone / "model_ckpts" / "insightface_models")
    assert resolve_model_paths(clone).insightface_root == clone / "model_ckpts" / "insightface_models"


def test_hf_clone_prefers_the_v_express_folder_per_file(tiny_model_dir, tmp_path):
    clone = _hf_clone(tiny_model_dir, tmp_path / "V-Express")
    vx = clone / "model_ckpts" / "v-express"
    shutil.copyfile(clone / "motion_module.bin", vx / "motion_module.bin")
    (clone / "audio_projection.bin").rename(vx / "audio_projection.bin")
    paths = resolve_model_paths(clone)
    assert not paths.missing()
    assert paths.motion_module == vx / "motion_module.bin" and paths.audio_projection == vx / "audio_projection.bin"
    assert paths.denoising_unet == clone / "denoising_unet.bin"
    assert paths.vexpress_dir == clone  # most files are at the top: missing ones would go there too
    # All five in v-express/: the released layout, whatever lies at the top.
    for name in ("denoising_unet", "reference_net", "v_kps_guider"):
        shutil.copyfile(clone / f"{name}.bin", vx / f"{name}.bin")
    paths = resolve_model_paths(clone)
    assert all(getattr(paths, name) == vx / f"{name}.bin" for name in VX_FILES)
    assert paths.layout == "released" and paths.vexpress_dir == vx


def test_hf_clone_missing_file_lists_every_place_searched(tiny_model_dir, tmp_path):
    clone = _hf_clone(tiny_model_dir, tmp_path / "V-Express")
    (clone / "motion_module.bin").unlink()
    paths = resolve_model_paths(clone)
    assert len(paths.missing()) == 1 and paths.missing()[0].startswith("motion_module weights")
    vx = clone / "model_ckpts" / "v-express"
    assert paths.searched["motion_module"] == (vx, clone)
    with pytest.raises(ModelFolderError) as info:
        load_vexpress_models(clone, "fp32", "cpu")
    message = str(info.value)
    assert "motion_module.bin" in message and f"{vx}, {clone})" in message
    assert "denoising_unet" not in message


def test_missing_folder_and_parts(tmp_path):
    with pytest.raises(ModelFolderError, match="model folder not found"):
        resolve_model_paths(tmp_path / "nope")
    paths = resolve_model_paths(tmp_path)
    with pytest.raises(ModelFolderError) as info:
        paths.require()
    message = str(info.value)
    assert all(f"{name}.bin" in message for name in VX_FILES)
    assert "sd-vae-ft-mse" in message and "wav2vec2-base-960h" in message
    # Every place searched for each V-Express file: v-express/ and the folder itself.
    assert message.count(f"looked in: {tmp_path / 'v-express'}, {tmp_path})") == len(VX_FILES)


def test_vexpress_config_is_validated(tiny_model_dir, tmp_path):
    folder = _copy_with_own_vexpress(tiny_model_dir, tmp_path / "model_ckpts")
    cfg = folder / "v-express" / "vexpress_config.json"
    data = json.loads(cfg.read_text())
    data["audio_proj_heads"] = "three"
    cfg.write_text(json.dumps(data))
    with pytest.raises(ModelFolderError, match="audio_proj_heads"):
        load_audio_projection(folder, "fp32", "cpu")
    cfg.unlink()  # released defaults then do not fit the tiny files: the hint names the constants' source
    with pytest.raises(CheckpointMismatchError, match="built-in default"):
        load_audio_projection(folder, "fp32", "cpu")


def test_check_model_command_line_on_the_shared_tiny_model(parity_model_dir):
    result = subprocess.run([sys.executable, "-m", "vexpress_model.check_model", "--model_dir", str(parity_model_dir)],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("OK")


def test_individual_paths(tiny_model_dir):
    paths = resolve_model_paths(
        vexpress_dir=tiny_model_dir / "v-express",
        unet_config=tiny_model_dir / "stable-diffusion-v1-5" / "unet" / "config.json",
        vae=tiny_model_dir / "sd-vae-ft-mse",
        wav2vec2=tiny_model_dir / "wav2vec2-base-960h",
    )
    assert not paths.missing() and paths.vexpress_config is not None
    models = load_vexpress_models(paths, torch.float32, "cpu")
    assert models.paths is paths and models.dtype == torch.float32


def test_path_helpers_import_without_torch():
    code = ("import sys, vexpress_model.models.paths, vexpress_model.check_model; "
            "print('torch' in sys.modules, 'diffusers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "False False"
