"""Our networks reproduce the original implementation's recorded tensors on the shared tiny model (fp32, CPU), and
the UNet's fast paths equal its plain (original-like) paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vexpress_model.errors import FrameLimitError
from vexpress_model.models import VExpressModels, load_vexpress_models
from vexpress_model.models.checkpoint import open_checkpoint

CASES = ("S1_fix_face", "S2_no_retarget")
BOUND = 1e-5  # max|a - b| / max|ref| (issue 3)


def rel_err(ours: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    a = ours.detach().double().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours, np.float64)
    b = np.asarray(ref, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def parity_models(parity_model_dir: Path) -> VExpressModels:
    return load_vexpress_models(parity_model_dir, torch.float32, "cpu")


@pytest.fixture(scope="module", params=CASES)
def case(request, parity_dir: Path):
    out = parity_dir / "outputs" / request.param
    return {
        "dir": out,
        "case": json.loads((out / "case.json").read_text()),
        "meta": json.loads((out / "meta.json").read_text()),
        "load": lambda name: np.load(out / name),
    }


def _weights(case) -> dict[str, float]:
    args = case["case"]["cli_args"]
    return {"reference_attention_weight": float(args["reference_attention_weight"]),
            "audio_attention_weight": float(args["audio_attention_weight"])}


def _bank(case) -> dict[str, torch.Tensor]:
    bank = np.load(case["dir"] / "reference_bank.npz")
    return {k: torch.from_numpy(bank[k]) for k in bank.files}


@torch.no_grad()
def test_reference_bank(parity_models, case):
    bank = parity_models.reference_net(torch.from_numpy(case["load"]("reference_net_input.npy")))
    ref = np.load(case["dir"] / "reference_bank.npz")
    assert list(bank) == case["meta"]["reference_bank_blocks"] or set(bank) == set(ref.files)
    assert set(bank) == set(ref.files)
    for key in ref.files:
        assert rel_err(bank[key], ref[key]) <= BOUND, key


@torch.no_grad()
def test_kps_features(parity_models, case):
    images = torch.from_numpy(case["load"]("kps_images.npy")).float().div(255)  # [T, H, W, 3] uint8 -> [0, 1]
    features = parity_models.kps_guider(images.permute(3, 0, 1, 2)[None])
    ref = case["load"]("kps_feature.npy")  # [uncond zeros, cond]
    assert rel_err(features, ref[1:]) <= BOUND


@torch.no_grad()
def test_audio_projection(parity_models, case):
    tokens = parity_models.audio_projection(torch.from_numpy(case["load"]("audio_proj_input.npy")))
    assert rel_err(tokens, case["load"]("audio_proj_output.npy")) <= BOUND


@torch.no_grad()
def test_vae_and_wav2vec2_load_every_weight(parity_models, case):
    """The VAE (old attention names) and wav2vec2 (weight_g/weight_v, CTC head) files load with no weight left
    random: the encoders reproduce the original's reference latent and wav2vec2 features."""
    latent = parity_models.vae.encode(torch.from_numpy(case["load"]("ref_image_tensor.npy"))).latent_dist.mean
    assert rel_err(latent * 0.18215, case["load"]("ref_latent.npy")) <= BOUND
    hidden = parity_models.audio_encoder(torch.from_numpy(case["load"]("audio_input_values.npy"))).last_hidden_state
    assert rel_err(hidden, case["load"]("wav2vec_last_hidden_state.npy")) <= BOUND


def _first_call(parity_models, case, fast: bool) -> torch.Tensor:
    unet = parity_models.denoising_unet
    unet.fast_paths = fast
    sample = torch.from_numpy(case["load"]("unet_first_call_sample.npy"))
    b, _, f = sample.shape[:3]
    states = torch.from_numpy(case["load"]("unet_first_call_encoder_hidden_states.npy"))  # [B*F, 5, D]
    return unet(
        sample,
        torch.from_numpy(case["load"]("unet_first_call_timestep.npy")),
        states.reshape(b, f, *states.shape[1:]),
        torch.from_numpy(case["load"]("unet_first_call_kps_features.npy")),
        unet.prepare_reference(_bank(case)),
        uncond=torch.tensor([True, False]),  # the CFG batch is [uncond (zeros), cond]
        **_weights(case),
    )


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@torch.no_grad()
def test_unet_first_call(parity_models, case, fast):
    out = _first_call(parity_models, case, fast)
    assert rel_err(out, case["load"]("unet_first_call_out.npy")) <= BOUND


@pytest.mark.slow
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@torch.no_grad()
def test_every_recorded_unet_call(parity_models, case, fast):
    """All calls of the 3-step runs: inputs rebuilt from the recorded latents, features and tokens."""
    unet = parity_models.denoising_unet
    unet.fast_paths = fast
    context = unet.prepare_reference(_bank(case))
    calls = np.load(case["dir"] / "unet_calls.npz")
    latents = [case["load"]("init_latents.npy"), case["load"]("latents_step0.npy"), case["load"]("latents_step1.npy")]
    kps = torch.from_numpy(case["load"]("kps_feature.npy"))
    audio = torch.from_numpy(case["load"]("audio_embeddings.npy"))
    timesteps = case["load"]("timesteps.npy")
    windows = case["meta"]["context_indices"]
    assert len(calls.files) == len(timesteps) * len(windows)
    for i, t in enumerate(timesteps):
        for j, (start, end) in enumerate(windows):
            window = slice(start, end + 1)
            sample = torch.from_numpy(latents[i][:, :, window]).repeat(2, 1, 1, 1, 1)
            out = unet(sample, torch.tensor(t), audio[:, window], kps[:, :, window], context,
                       uncond=torch.tensor([True, False]), **_weights(case))
            assert rel_err(out, calls[f"step{i}_ctx{j}"]) <= BOUND, (i, j)


def test_motion_module_file_wins(parity_models, parity_model_dir):
    """The tiny model's denoising_unet.bin holds other motion values than motion_module.bin; the latter is used."""
    key = "up_blocks.1.motion_modules.2.temporal_transformer.proj_in.weight"
    loaded = parity_models.denoising_unet.state_dict()[key]
    main = open_checkpoint(parity_model_dir / "v-express" / "denoising_unet.bin")[key].float()
    motion = open_checkpoint(parity_model_dir / "v-express" / "motion_module.bin")[key].float()
    assert not torch.equal(main, motion)
    assert torch.equal(loaded, motion)


# -- fast paths == plain paths ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_plain_inputs(parity_models, parity_dir):
    torch.manual_seed(0)
    bank_np = np.load(parity_dir / "outputs" / "S1_fix_face" / "reference_bank.npz")
    bank = {k: torch.from_numpy(bank_np[k]) for k in bank_np.files}
    b, f = 3, 5
    return {
        "sample": torch.randn(b, 4, f, 8, 8),
        "audio": torch.randn(b, f, 5, 40),
        "kps": torch.randn(b, 32, f, 8, 8),
        "bank": bank,
        # one reference per item (R = B), to exercise per-item banks too
        "bank_per_item": {k: torch.cat([v, 0.5 * v, -v]) for k, v in bank.items()},
    }


@pytest.mark.parametrize(
    "uncond,per_item,kps,weights",
    [
        ([False, True, False], False, True, (0.95, 3.0)),
        ([True, True, True], False, True, (1.0, 1.0)),
        ([False, False, False], False, False, (0.5, 2.0)),
        (None, True, True, (1.0, 1.0)),
        ([True, False, True], True, True, (0.7, 0.0)),
    ],
)
@torch.no_grad()
def test_fast_equals_plain(parity_models, fast_plain_inputs, uncond, per_item, kps, weights):
    unet = parity_models.denoising_unet
    x = fast_plain_inputs
    bank = x["bank_per_item"] if per_item else x["bank"]
    outs = []
    for fast in (True, False):
        unet.fast_paths = fast
        outs.append(unet(
            x["sample"], 500, x["audio"], x["kps"] if kps else None, unet.prepare_reference(bank),
            reference_attention_weight=weights[0], audio_attention_weight=weights[1],
            uncond=None if uncond is None else torch.tensor(uncond),
        ))
    unet.fast_paths = True
    assert rel_err(outs[0], outs[1].numpy()) <= 1e-5


@torch.no_grad()
def test_uncond_items_ignore_their_conditions(parity_models, fast_plain_inputs):
    """Unconditional items get zero kps/audio/reference whatever the caller passed (both paths)."""
    unet = parity_models.denoising_unet
    x = fast_plain_inputs
    for fast in (True, False):
        unet.fast_paths = fast
        ctx = unet.prepare_reference(x["bank"])
        a = unet(x["sample"], 999, x["audio"], x["kps"], ctx, uncond=torch.tensor([True, False, False]))
        b = unet(x["sample"], 999, x["audio"] * 0, x["kps"] * 0, ctx, uncond=torch.tensor([True, False, False]))
        assert torch.allclose(a[0], b[0], rtol=0, atol=1e-6)
        assert not torch.allclose(a[1], b[1])
    unet.fast_paths = True


def test_frame_limit(parity_models):
    unet = parity_models.denoising_unet
    ctx = unet.prepare_reference({k: torch.zeros(1, 1, w) for k, w in unet.block_widths().items()})
    with pytest.raises(FrameLimitError, match="at most 32"):
        unet(torch.zeros(1, 4, 33, 8, 8), 1, torch.zeros(1, 33, 5, 40), None, ctx)
    assert issubclass(FrameLimitError, ValueError)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_load_and_run(parity_model_dir, parity_models, dtype):
    """fp16 / bf16 weights are materialised directly in that dtype; the CPU run stays close to fp32."""
    models = load_vexpress_models(parity_model_dir, dtype, "cpu")
    for name in ("reference_net", "denoising_unet", "kps_guider", "audio_projection", "vae", "audio_encoder"):
        module = getattr(models, name)
        assert {p.dtype for p in module.parameters()} == {dtype}, name
    with torch.no_grad():
        x = torch.randn(4, 10, 48)
        ours = models.audio_projection(x).float()
        ref = parity_models.audio_projection(x)
    assert rel_err(ours, ref.numpy()) < 5e-2
