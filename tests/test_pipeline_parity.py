"""Numerical parity of the pipeline with the original implementation (issue 4), on the shared tiny model.

1. The recorded cases ``S1_fix_face`` and ``S2_no_retarget``: with ``compat="original"``, fp32, CPU, driven from the
   recorded conditioning inputs (``ref_image_tensor``, ``kps_images``, ``audio_proj_input``), the latents after every
   step and at the end match the original's to max-abs 1e-4 and the uint8 frames to 1 grey level. When the input
   and conditioning layers are present, the same comparison also runs from the real input files.
2. Cases without recorded outputs: our batched / fast-path / fp32-accumulating loop equals the original-style
   per-window loop (``testing.reference_loop``) on the real tiny networks for other seeds, window settings,
   sizes, guidance 1.0 (no CFG), and both compat modes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vexpress_model.conditioning.audio_features import Waveform16k
from vexpress_model.pipeline.hooks import Hooks, SamplingSettings
from vexpress_model.pipeline.sampler import VExpressPipeline
from vexpress_model.pipeline.windows import context_windows, plan_frames
from vexpress_model.testing.reference_loop import original_style_sample

models_module = pytest.importorskip("vexpress_model.models")
if not hasattr(models_module, "load_vexpress_models"):
    pytest.skip("vexpress_model.models.load_vexpress_models is not available yet", allow_module_level=True)

CASES = ("S1_fix_face", "S2_no_retarget")


@pytest.fixture(scope="module")
def parity_models(parity_model_dir: Path):
    return models_module.load_vexpress_models(parity_model_dir, device="cpu", dtype=torch.float32)


def _case(parity_dir: Path, case: str) -> tuple[Path, dict]:
    folder = parity_dir / "outputs" / case
    return folder, json.loads((folder / "case.json").read_text())


def _settings(args: dict) -> SamplingSettings:
    return SamplingSettings(
        num_inference_steps=int(args["num_inference_steps"]),
        guidance_scale=float(args["guidance_scale"]),
        reference_attention_weight=float(args["reference_attention_weight"]),
        audio_attention_weight=float(args["audio_attention_weight"]),
        seed=int(args["seed"]),
    )


def _check_outputs(folder: Path, meta: dict, dumped: dict[str, np.ndarray], frames: np.ndarray) -> None:
    np.testing.assert_array_equal(dumped["init_latents"], np.load(folder / "init_latents.npy"))
    for step in range(int(meta["cli_args"]["num_inference_steps"])):
        expected = np.load(folder / f"latents_step{step}.npy")
        diff = np.abs(dumped[f"latents_step{step}"].astype(np.float64) - expected).max()
        assert diff <= 1e-4, f"latents_step{step}: max-abs {diff:.3g} > 1e-4"
    diff = np.abs(dumped["latents_final"].astype(np.float64) - np.load(folder / "latents_final.npy")).max()
    assert diff <= 1e-4, f"latents_final: max-abs {diff:.3g} > 1e-4"
    expected_frames = np.load(folder / "frames_uint8.npy")
    assert frames.shape == expected_frames.shape
    grey = np.abs(frames.astype(np.int16) - expected_frames.astype(np.int16)).max()
    assert grey <= 1, f"frames_uint8 differ by {grey} grey levels"
    np.testing.assert_array_equal(dumped["frames_uint8"], frames)


@pytest.mark.parametrize("case", CASES)
def test_parity_from_recorded_conditioning(parity_dir, parity_models, case):
    folder, meta = _case(parity_dir, case)
    args, expected = meta["cli_args"], meta["expected"]
    plan = plan_frames(expected["duration_s"], float(args["fps"]), args["context_frames"], args["context_overlap"],
                       "original")
    dumped: dict[str, np.ndarray] = {}
    hooks = Hooks(dump=lambda name, array: dumped.__setitem__(name, array))
    pipeline = VExpressPipeline(parity_models, device="cpu", compat="original")
    reference = pipeline.encode_reference(torch.from_numpy(np.load(folder / "ref_image_tensor.npy")), hooks)
    kps = pipeline.encode_kps(np.load(folder / "kps_images.npy"), plan.num_frames, hooks)
    tokens = pipeline.project_audio(np.load(folder / "audio_proj_input.npy"), hooks)
    latents = pipeline.sample(reference, kps, tokens, plan, _settings(args), hooks)
    frames = np.concatenate(list(pipeline.decode(latents, hooks=hooks)))
    pipeline.finish()

    audio_ref = np.load(folder / "audio_proj_output.npy")
    assert np.abs(dumped["audio_proj_output"] - audio_ref).max() / np.abs(audio_ref).max() <= 1e-4
    assert np.abs(dumped["ref_latent"] - np.load(folder / "ref_latent.npy")).max() <= 1e-4
    _check_outputs(folder, meta, dumped, frames)
    # The recorded UNet call count: windows x steps, here all windows of a step in one call.
    assert pipeline.stats["unet_calls"] == args["num_inference_steps"]
    assert pipeline.stats["reference_net_calls"] == 1
    if case == "S1_fix_face":
        assert kps.broadcast and pipeline.stats["kps_guider_calls"] == 1


def _real_inputs(parity_dir: Path, meta: dict, pipeline: VExpressPipeline, hooks: Hooks):
    """The case's conditioning computed from its input files by the input and conditioning layers."""
    image_mod = pytest.importorskip("vexpress_model.inputs.image")
    audio_mod = pytest.importorskip("vexpress_model.inputs.audio")
    kps_mod = pytest.importorskip("vexpress_model.inputs.kps")
    sequence_mod = pytest.importorskip("vexpress_model.conditioning.kps_sequence")
    retarget_mod = pytest.importorskip("vexpress_model.conditioning.retarget")
    drawing_mod = pytest.importorskip("vexpress_model.conditioning.kps_images")
    args = meta["cli_args"]
    width, height = int(args["image_width"]), int(args["image_height"])
    image = image_mod.load_reference_image(parity_dir / args["reference_image_path"], width, height, "original")
    waveform = audio_mod.load_audio_16k(parity_dir / args["audio_path"], compat="original")
    plan = plan_frames(len(waveform) / 16000, float(args["fps"]), args["context_frames"], args["context_overlap"],
                       "original")
    reference_kps = kps_mod.load_reference_kps(parity_dir / args["reference_kps_path"])
    strategy = args["retarget_strategy"]
    driving = None
    if strategy != "fix_face":
        track = kps_mod.load_kps(parity_dir / args["kps_path"])
        driving = sequence_mod.resample_kps_track(track, plan.num_frames, plan.fps, compat="original")
    sequence = retarget_mod.retarget_kps(reference_kps, driving, strategy, "original", num_frames=plan.num_frames)
    kps_images = drawing_mod.draw_kps_images(height, width, sequence)
    reference = pipeline.encode_reference(image, hooks)
    kps = pipeline.encode_kps(kps_images, plan.num_frames, hooks)
    tokens = pipeline.encode_audio(Waveform16k(waveform), plan.num_frames, hooks)
    return plan, reference, kps, tokens


@pytest.mark.parametrize("case", CASES)
def test_parity_from_the_input_files(parity_dir, parity_models, case):
    folder, meta = _case(parity_dir, case)
    dumped: dict[str, np.ndarray] = {}
    hooks = Hooks(dump=lambda name, array: dumped.__setitem__(name, array))
    pipeline = VExpressPipeline(parity_models, device="cpu", compat="original")
    plan, reference, kps, tokens = _real_inputs(parity_dir, meta, pipeline, hooks)
    assert plan.num_frames == meta["expected"]["video_length"]
    latents = pipeline.sample(reference, kps, tokens, plan, _settings(meta["cli_args"]), hooks)
    frames = np.concatenate(list(pipeline.decode(latents, hooks=hooks)))
    audio_ref = np.load(folder / "audio_proj_output.npy")
    assert np.abs(dumped["audio_proj_output"] - audio_ref).max() / np.abs(audio_ref).max() <= 1e-4
    _check_outputs(folder, meta, dumped, frames)


# -------------------------------------------------------------------------------------------------------------
# Our loop against the original-style loop on the real tiny networks, for cases without recorded outputs.

def _conditions(pipeline: VExpressPipeline, num_frames: int, size: tuple[int, int], seed: int, fixed_face: bool):
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    image = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
    count = 1 if fixed_face else num_frames
    # Sparse coloured blobs, roughly like V-Kps drawings on black.
    kps = torch.zeros((count, height, width, 3), dtype=torch.uint8)
    for index in range(count):
        y, x = 8 + index % (height - 16), 8 + (3 * index) % (width - 16)
        kps[index, y - 4 : y + 4, x - 4 : x + 4, index % 3] = 255
    constants = pipeline.models.constants
    d_in = int(getattr(constants, "audio_proj_inp_dim", 48))
    windows = torch.randn((num_frames, 10, d_in), generator=generator)
    reference = pipeline.encode_reference(image)
    features = pipeline.encode_kps(kps.numpy(), num_frames)
    tokens = pipeline.project_audio(windows)
    return reference, features, tokens


@pytest.mark.parametrize(
    "compat,num_frames,context,overlap,size,guidance,seed,fast,batch",
    [
        ("original", 22, 6, 2, (64, 64), 3.5, 7, True, None),
        ("original", 20, 12, 4, (64, 64), 2.5, 123, True, 1),
        ("original", 12, 8, 4, (64, 128), 1.0, 5, True, None),  # no CFG, non-square
        ("fixed", 17, 12, 4, (64, 64), 3.5, 11, True, None),  # last window pulled back
        ("fixed", 5, 8, 4, (64, 64), 3.5, 2, True, None),  # shorter than one window
        ("fixed", 14, 6, 2, (128, 64), 1.0, 0, False, 2),
    ],
)
def test_fast_loop_equals_original_style_loop_on_the_tiny_model(
    parity_models, compat, num_frames, context, overlap, size, guidance, seed, fast, batch
):
    settings = SamplingSettings(2, guidance, 0.95, 3.0, seed)
    windows = context_windows(num_frames, context, overlap, compat)
    pipeline = VExpressPipeline(parity_models, device="cpu", compat=compat, fast_paths=fast,
                                window_batch_size=batch)
    reference, kps, tokens = _conditions(pipeline, num_frames, size, seed, fixed_face=seed % 2 == 1)
    ours = pipeline.sample(reference, kps, tokens, windows, settings)
    features = kps.features.expand(-1, -1, num_frames, -1, -1) if kps.broadcast else kps.features
    theirs = original_style_sample(
        parity_models.denoising_unet, reference.bank, features, tokens, windows, settings,
        device="cpu", dtype=torch.float32,
    )
    diff = (ours.cpu() - theirs).abs().max().item()
    # The parity bound; float-rounding differences here are ~2e-5 (the original's own thread-count noise).
    assert diff <= 1e-4, f"max-abs {diff:.3g}"


def test_fast_paths_and_batching_equal_the_plain_path_on_the_tiny_model(parity_models):
    settings = SamplingSettings(2, 3.5, 0.95, 3.0, 42)
    windows = context_windows(20, 8, 4, "original")
    results = {}
    for fast, batch in ((False, 1), (True, 1), (False, None), (True, None)):
        pipeline = VExpressPipeline(parity_models, device="cpu", compat="original", fast_paths=fast,
                                    window_batch_size=batch)
        reference, kps, tokens = _conditions(pipeline, 20, (64, 64), 3, fixed_face=False)
        results[(fast, batch)] = pipeline.sample(reference, kps, tokens, windows, settings)
    base = results[(False, 1)]
    for key, value in results.items():
        assert (value - base).abs().max().item() <= 1e-4, key
