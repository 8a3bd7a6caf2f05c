"""The released checkpoints' key manifests load strictly into our networks built at full size (meta device), and
every kind of deviation (missing key, extra key, other shape) is refused with a message naming file, key and shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vexpress_model.errors import CheckpointMismatchError
from vexpress_model.models import loading
from vexpress_model.models.checkpoint import CheckpointFile, Source, load_strict
from vexpress_model.models.config import UNetConfig, VExpressConstants

VEXPRESS_MANIFESTS = ("denoising_unet", "motion_module", "reference_net", "v_kps_guider", "audio_projection")
EXTRA_MANIFESTS = ("sd-vae-ft-mse__diffusion_pytorch_model", "wav2vec2-base-960h__pytorch_model")


def _manifest(manifests_dir: Path, name: str) -> dict:
    path = manifests_dir / f"{name}.json"
    if not path.is_file():
        path = manifests_dir / "extra" / f"{name}.json"
    return json.loads(path.read_text())


def _meta_state(manifest: dict) -> CheckpointFile:
    """A 'file' holding exactly the manifest's keys, shapes and dtypes, as meta tensors (no memory)."""
    tensors = {
        key: torch.empty(spec["shape"], dtype=getattr(torch, spec["dtype"]), device="meta")
        for key, spec in manifest["tensors"].items()
    }
    return CheckpointFile(Path(manifest["file"]), manifest["file"], tensors)


@pytest.fixture(scope="module")
def full_config(real_configs_dir: Path) -> UNetConfig:
    return UNetConfig.from_json(real_configs_dir / "stable-diffusion-v1-5" / "unet" / "config.json")


def _load(name: str, states: dict[str, CheckpointFile], config: UNetConfig, real_configs_dir: Path) -> torch.nn.Module:
    """Load the manifest-shaped states for one component strictly, on the meta device, like the real loaders."""
    constants = VExpressConstants()
    kwargs = {"dtype": torch.float16, "device": "meta"}
    if name in ("denoising_unet", "motion_module"):
        unet = loading.build_denoising_unet(config, constants)
        return loading.load_denoising_state(unet, states["denoising_unet"], states["motion_module"], **kwargs)
    if name == "reference_net":
        module = loading.build_reference_net(config, constants)
    elif name == "v_kps_guider":
        module = loading.build_kps_guider(constants)
    elif name == "audio_projection":
        module = loading.build_audio_projection(constants, config)
    elif name.startswith("sd-vae-ft-mse"):
        module = loading.build_vae(real_configs_dir / "sd-vae-ft-mse" / "config.json")
        return load_strict(module, [Source(loading.vae_state(states[name]), states[name].label)], what="VAE",
                           **kwargs)
    else:
        module = loading.build_audio_encoder(real_configs_dir / "wav2vec2-base-960h")
        return load_strict(module, [loading.audio_encoder_source(module, states[name])], what="wav2vec2", **kwargs)
    return load_strict(module, [Source(states[name], states[name].label)], what=name, **kwargs)


def _states(manifests_dir: Path, name: str) -> dict[str, CheckpointFile]:
    names = ("denoising_unet", "motion_module") if name in ("denoising_unet", "motion_module") else (name,)
    return {n: _meta_state(_manifest(manifests_dir, n)) for n in names}


@pytest.mark.parametrize("name", VEXPRESS_MANIFESTS + EXTRA_MANIFESTS)
def test_manifest_loads_strictly_at_full_size(name, manifests_dir, full_config, real_configs_dir):
    states = _states(manifests_dir, name)
    module = _load(name, states, full_config, real_configs_dir)
    params = dict(module.state_dict())
    manifest = _manifest(manifests_dir, name)
    if name == "motion_module":
        assert all(".motion_modules." in k for k in manifest["tensors"])
    elif name.startswith("wav2vec2"):
        # Everything but the CTC head is a model weight; lm_head is the only thing left out.
        used = [k for k in manifest["tensors"] if not k.startswith("lm_head.")]
        assert len(params) == len(used) == manifest["num_tensors"] - 2
    else:
        assert len(params) == manifest["num_tensors"]
    assert all(t.dtype == torch.float16 for t in params.values())


def test_full_size_shapes_equal_manifest_exactly(manifests_dir, full_config):
    """Our networks' own state dicts (not only what loads) are the manifests' key sets and shapes."""
    constants = VExpressConstants()
    built = {
        "denoising_unet": loading.build_denoising_unet(full_config, constants),
        "reference_net": loading.build_reference_net(full_config, constants),
        "v_kps_guider": loading.build_kps_guider(constants),
        "audio_projection": loading.build_audio_projection(constants, full_config),
    }
    for name, module in built.items():
        expected = {k: v["shape"] for k, v in _manifest(manifests_dir, name)["tensors"].items()}
        assert {k: list(v.shape) for k, v in module.state_dict().items()} == expected, name
    motion = set(_manifest(manifests_dir, "motion_module")["tensors"])
    assert set(loading.motion_module_keys(built["denoising_unet"])) == motion


def test_reference_pairing_matches_manifest(manifests_dir, full_config):
    pairing = json.loads((manifests_dir / "reference_attention_pairing.json").read_text())
    unet = loading.build_denoising_unet(full_config)
    ref = loading.build_reference_net(full_config)
    widths = unet.block_widths()
    assert widths == ref.block_widths()
    assert {p["reader"]: p["width"] for p in pairing} == widths
    assert all(p["reader"] == p["writer"] for p in pairing)


# name of the file each mutation is applied to, and a key in it
MUTATION_TARGETS = [
    ("denoising_unet", "denoising_unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1_5.to_k.weight"),
    ("denoising_unet", "motion_module",
     "up_blocks.2.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"),
    ("reference_net", "reference_net", "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight"),
    ("v_kps_guider", "v_kps_guider", "blocks.5.weight"),
    ("audio_projection", "audio_projection", "layers.3.0.to_kv.weight"),
    ("sd-vae-ft-mse__diffusion_pytorch_model", "sd-vae-ft-mse__diffusion_pytorch_model",
     "decoder.mid_block.attentions.0.query.weight"),
    ("wav2vec2-base-960h__pytorch_model", "wav2vec2-base-960h__pytorch_model",
     "wav2vec2.encoder.pos_conv_embed.conv.weight_v"),
]


def _fmt(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


@pytest.mark.parametrize("component,file,key", MUTATION_TARGETS)
@pytest.mark.parametrize("mutation", ["remove", "add", "reshape"])
def test_mutated_manifest_is_refused(component, file, key, mutation, manifests_dir, full_config, real_configs_dir):
    states = _states(manifests_dir, component)
    state = states[file]
    tensors = state._tensors
    label = state.label
    shape = list(tensors[key].shape)
    if mutation == "remove":
        del tensors[key]
        expected_bits = [label, "missing", repr(key.replace("query", "to_q").replace("wav2vec2.", "")
                                                .replace("weight_v", "parametrizations.weight.original1")), _fmt(shape)]
    elif mutation == "add":
        tensors["extra_block.weight"] = torch.empty(3, 5, device="meta", dtype=torch.float16)
        expected_bits = [label, "unexpected", "'extra_block.weight'", "[3, 5]"]
    else:
        bad = shape[:-1] + [shape[-1] + 1]
        tensors[key] = torch.empty(bad, device="meta", dtype=torch.float16)
        expected_bits = [label, "expected shape " + _fmt(shape), "found " + _fmt(bad)]
    with pytest.raises(CheckpointMismatchError) as info:
        _load(component, states, full_config, real_configs_dir)
    message = str(info.value)
    for bit in expected_bits:
        assert bit in message, (bit, message)


def test_denoising_unet_file_must_hold_motion_keys_too(manifests_dir, full_config, real_configs_dir):
    """Strict per file: denoising_unet.bin holds the motion keys as released (they are overridden, not optional)."""
    states = _states(manifests_dir, "denoising_unet")
    key = "mid_block.motion_modules.0.temporal_transformer.proj_out.weight"
    del states["denoising_unet"]._tensors[key]
    with pytest.raises(CheckpointMismatchError, match="denoising_unet.bin"):
        _load("denoising_unet", states, full_config, real_configs_dir)


def test_motion_module_file_may_not_hold_other_keys(manifests_dir, full_config, real_configs_dir):
    states = _states(manifests_dir, "denoising_unet")
    states["motion_module"]._tensors["conv_in.weight"] = torch.empty(320, 4, 3, 3, device="meta")
    with pytest.raises(CheckpointMismatchError, match=r"motion_module.bin.*unexpected key 'conv_in.weight'"):
        _load("denoising_unet", states, full_config, real_configs_dir)


def test_wrong_constants_are_reported_with_their_source(manifests_dir, full_config):
    """A model whose sizes differ from the constants names the constants in the hint."""
    state = _meta_state(_manifest(manifests_dir, "v_kps_guider"))
    constants = VExpressConstants(kps_guider_block_out_channels=(16, 32, 64, 128))
    guider = loading.build_kps_guider(constants)
    hint = loading._constants_hint(constants, ("kps_guider_block_out_channels",))
    with pytest.raises(CheckpointMismatchError, match="vexpress_config.json") as info:
        load_strict(guider, [Source(state, state.label)], dtype=torch.float16, device="meta", what="guider",
                    hint=hint)
    assert "blocks.3.weight" in str(info.value)


def test_full_size_forward_shapes_on_meta(full_config):
    """The full-size networks run end to end on meta tensors (shapes only), fast and plain, incl. a latent size
    that is not a multiple of 8 (upsampling to the skip connections' sizes)."""
    constants = VExpressConstants()
    unet = loading.build_denoising_unet(full_config, constants)
    ref = loading.build_reference_net(full_config, constants)

    def meta(*shape):
        return torch.empty(*shape, device="meta")

    bank = ref(meta(1, 4, 64, 64))
    assert bank["down_blocks.0.attentions.0.transformer_blocks.0"].shape == (1, 4096, 320)
    assert bank["mid_block.attentions.0.transformer_blocks.0"].shape == (1, 64, 1280)
    for fast in (True, False):
        unet.fast_paths = fast
        out = unet(meta(2, 4, 24, 64, 64), 999, meta(2, 24, 5, 768), meta(2, 320, 24, 64, 64),
                   unet.prepare_reference(bank), uncond=torch.tensor([True, False]))
        assert out.shape == (2, 4, 24, 64, 64)
    out = unet(meta(1, 4, 32, 60, 44), 999, meta(1, 32, 5, 768), None, unet.prepare_reference(bank))
    assert out.shape == (1, 4, 32, 60, 44)
    assert loading.build_kps_guider(constants)(meta(1, 3, 24, 512, 512)).shape == (1, 320, 24, 64, 64)
    assert loading.build_audio_projection(constants, full_config)(meta(24, 10, 768)).shape == (24, 5, 768)
