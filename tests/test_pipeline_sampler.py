"""The windowed sampler on stand-in networks: equivalence with the original-style loop, every speed-up against
the plain path, progress, cancel, dumps and chunked decode (issue 4). Stages, placement/offload and memory:
test_pipeline_sampler_memory.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_pipeline_fakes import make_fake_models, make_inputs
from vexpress_model.errors import GenerationCancelled, InputError
from vexpress_model.pipeline.hooks import Hooks, SamplingSettings
from vexpress_model.pipeline.sampler import VExpressPipeline, frames_to_uint8
from vexpress_model.pipeline.windows import balanced_batches, context_windows, plan_frames
from vexpress_model.testing.reference_loop import original_style_decode, original_style_sample

STEPS = 3


def _run(pipeline: VExpressPipeline, num_frames: int, windows, settings: SamplingSettings, size: int = 32,
         fixed_face: bool = False, hooks: Hooks | None = None):
    image, kps_images, audio = make_inputs(num_frames, size=size, fixed_face=fixed_face)
    reference = pipeline.encode_reference(image)
    kps = pipeline.encode_kps(kps_images, num_frames)
    tokens = pipeline.project_audio(audio)
    latents = pipeline.sample(reference, kps, tokens, windows, settings, hooks)
    return latents, (reference, kps, tokens)


def _original_style(models, conditions, windows, settings):
    reference, kps, tokens = conditions
    features = kps.features.expand(-1, -1, kps.num_frames, -1, -1) if kps.broadcast else kps.features
    return original_style_sample(
        models.denoising_unet, reference.bank, features, tokens, windows, settings, device="cpu", dtype=torch.float32
    )


LOOP_CASES = [
    (24, 8, 4, 42, 3.5, 32),  # the S1 layout
    (32, 8, 4, 3, 2.5, 32),  # the S2 layout
    (20, 6, 2, 7, 3.5, 32),
    (28, 12, 4, 11, 1.0, 32),  # no CFG
    (16, 12, 4, 5, 2.0, 48),  # non-aligned length (fixed mode pulls the last window back) and another size
    (5, 8, 4, 6, 3.5, 32),  # shorter than one window
]


@pytest.mark.parametrize(
    "compat,num_frames,size,overlap,seed,guidance,image_size",
    [("fixed", *case) for case in LOOP_CASES]
    # compat="original" only ever has whole-window lengths.
    + [("original", *c) for c in LOOP_CASES if c[0] >= c[1] and (c[0] - c[1]) % (c[1] - c[2]) == 0],
)
def test_fast_loop_equals_the_original_style_loop(compat, num_frames, size, overlap, seed, guidance, image_size):
    models = make_fake_models()
    windows = context_windows(num_frames, size, overlap, compat)
    settings = SamplingSettings(STEPS, guidance, 0.95, 3.0, seed)
    pipeline = VExpressPipeline(models, compat=compat)
    ours, conditions = _run(pipeline, num_frames, windows, settings, size=image_size)
    theirs = _original_style(models, conditions, windows, settings)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.cpu(), theirs, atol=2e-5, rtol=0)
    # Every window ran in one UNet call per step here (default memory budget).
    assert pipeline.stats["unet_calls"] == STEPS


@pytest.mark.parametrize("batch", [1, 2, 3, None])
def test_window_batching_equals_one_window_per_call(batch):
    models = make_fake_models()
    windows = context_windows(40, 8, 4, "original")  # 9 windows
    settings = SamplingSettings(STEPS, 3.5, 0.9, 2.0, 1)
    base, _ = _run(VExpressPipeline(models, window_batch_size=1), 40, windows, settings)
    pipeline = VExpressPipeline(models, window_batch_size=batch)
    batched, _ = _run(pipeline, 40, windows, settings)
    torch.testing.assert_close(batched, base, atol=1e-5, rtol=0)
    expected_calls = len(balanced_batches(windows, batch or 10**6))
    assert pipeline.stats["unet_calls"] == STEPS * expected_calls


@pytest.mark.parametrize("compat,loop_dtype", [("original", torch.float16), ("fixed", torch.float32)])
def test_loop_dtype_follows_compat(compat, loop_dtype):
    """compat="original" keeps the original's run-dtype latents and accumulation (docs/spec.md §10 #11); "fixed" keeps a
    float32 master copy of the latents. The initial noise is drawn in the run dtype either way."""
    models = make_fake_models()
    for role in ("vae", "reference_net", "denoising_unet", "kps_guider", "audio_projection"):
        getattr(models, role).half()
    models.dtype = torch.float16
    dumped = {}
    hooks = Hooks(dump=lambda name, array: dumped.__setitem__(name, array))
    latents, _ = _run(VExpressPipeline(models, compat=compat), 12, context_windows(12, 8, 4), SamplingSettings(
        2, 3.5, 1, 1, 9), hooks=hooks)
    assert latents.dtype == loop_dtype
    noise = torch.randn([1, 4, 12, 4, 4], generator=torch.manual_seed(9), dtype=torch.float16)
    np.testing.assert_array_equal(dumped["init_latents"], noise.float().numpy())


def test_fast_paths_equal_plain_paths():
    models = make_fake_models()
    windows = context_windows(24, 8, 4, "original")
    settings = SamplingSettings(STEPS, 3.5, 0.95, 3.0, 42)
    fast, _ = _run(VExpressPipeline(models, fast_paths=True), 24, windows, settings)
    plain, _ = _run(VExpressPipeline(models, fast_paths=False), 24, windows, settings)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    assert models.denoising_unet.fast_paths is True  # restored


def test_fixed_face_features_are_computed_once_and_broadcast():
    models = make_fake_models()
    windows = context_windows(24, 8, 4, "original")
    settings = SamplingSettings(STEPS, 3.5, 0.95, 3.0, 42)
    pipeline = VExpressPipeline(models)
    broadcast, conditions = _run(pipeline, 24, windows, settings, fixed_face=True)
    kps = conditions[1]
    assert kps.broadcast and kps.features.shape[2] == 1
    assert pipeline.stats["kps_guider_calls"] == 1
    # The same images as a full sequence, computed frame by frame.
    _, kps_images, _ = make_inputs(24, fixed_face=True)
    full = VExpressPipeline(models, kps_chunk_frames=5)
    full_kps = full.encode_kps(kps_images[:1].repeat(24, 0) + 0, 24)
    assert full_kps.broadcast  # identical frames are detected
    kps_images_varied = kps_images.copy()
    kps_images_varied[3, 0, 0, 0] ^= 1
    varied = full.encode_kps(kps_images_varied, 24)
    assert not varied.broadcast and varied.features.shape[2] == 24
    torch.testing.assert_close(varied.features[:, :, 10], kps.features[:, :, 0])
    # A callable source gives the same features, read chunk by chunk.
    reads = []

    def source(start, stop):
        reads.append((start, stop))
        return kps_images_varied[start:stop]

    lazy = full.encode_kps(source, 24)
    assert reads == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 24)]
    torch.testing.assert_close(lazy.features, varied.features, atol=0, rtol=0)


def test_uncond_kps_features_are_not_stored():
    models = make_fake_models()
    pipeline = VExpressPipeline(models)
    _, kps_images, _ = make_inputs(20)
    kps = pipeline.encode_kps(kps_images)
    assert kps.features.shape[0] == 1 and kps.features.shape[2] == 20


def test_progress_is_reported_per_window_batch_with_a_preview():
    models = make_fake_models()
    windows = context_windows(40, 8, 4, "original")
    events = []
    hooks = Hooks(progress=lambda done, total, preview: events.append((done, total, preview)))
    _run(VExpressPipeline(models, window_batch_size=4), 40, windows, SamplingSettings(STEPS, 3.5, 1, 1, 0),
         hooks=hooks)
    assert [e[0] for e in events] == list(range(1, STEPS * 3 + 1))
    assert all(e[1] == STEPS * 3 for e in events)
    previews = [e[2] for e in events if e[2] is not None]
    assert len(previews) == STEPS and previews[0].shape == (1, 4, 40, 4, 4)


@pytest.mark.parametrize("mode", ["raise", "return"])
def test_cancel_stops_within_one_unet_call(mode):
    models = make_fake_models()
    windows = context_windows(40, 8, 4, "original")
    checks = {"n": 0}

    class Interrupted(Exception):
        pass

    def cancel():
        checks["n"] += 1
        if checks["n"] > 4:
            if mode == "raise":
                raise Interrupted
            return True
        return False

    pipeline = VExpressPipeline(models, window_batch_size=1)
    image, kps_images, audio = make_inputs(40)
    reference = pipeline.encode_reference(image)
    kps = pipeline.encode_kps(kps_images)
    tokens = pipeline.project_audio(audio)
    unet_calls_before = models.denoising_unet.calls
    expected = Interrupted if mode == "raise" else GenerationCancelled
    with pytest.raises(expected):
        pipeline.sample(reference, kps, tokens, windows, SamplingSettings(STEPS, 3.5, 1, 1, 0), Hooks(cancel=cancel))
    # Checked before every UNet call: stopped right after the 4th call.
    assert models.denoising_unet.calls - unet_calls_before == 4


def test_dumps_have_the_parity_names_and_shapes():
    models = make_fake_models()
    plan = plan_frames(24 / 30, 30, 8, 4, "original")
    dumped: dict[str, np.ndarray] = {}
    hooks = Hooks(dump=lambda name, array: dumped.__setitem__(name, array))
    pipeline = VExpressPipeline(models, compat="original", decode_chunk_frames=5)
    image, kps_images, audio = make_inputs(24)
    chunks = list(pipeline.generate(image, kps_images, audio, plan, SamplingSettings(STEPS, 3.5, 1, 1, 0), hooks))
    frames = np.concatenate(chunks)
    assert frames.dtype == np.uint8 and frames.shape == (24, 32, 32, 3)
    assert [c.shape[0] for c in chunks] == [5, 5, 5, 5, 4]
    expected = {"init_latents": (1, 4, 24, 4, 4), "ref_latent": (1, 4, 4, 4), "audio_proj_output": (24, 5, 12),
                "latents_final": (1, 4, 24, 4, 4), "video_float": (1, 3, 24, 32, 32), "frames_uint8": (24, 32, 32, 3)}
    expected.update({f"latents_step{i}": (1, 4, 24, 4, 4) for i in range(STEPS)})
    assert {name: array.shape for name, array in dumped.items()} == expected
    np.testing.assert_array_equal(dumped["frames_uint8"], frames)
    np.testing.assert_array_equal(dumped["latents_final"], dumped[f"latents_step{STEPS - 1}"])
    # The first draw of a freshly seeded CPU generator, exactly.
    noise = torch.randn([1, 4, 24, 4, 4], generator=torch.manual_seed(0), dtype=torch.float32)
    np.testing.assert_array_equal(dumped["init_latents"], noise.numpy())
    # Chunked decode equals the original's one-frame-at-a-time decode, truncated to uint8.
    video = original_style_decode(models.vae, torch.from_numpy(dumped["latents_final"]), device="cpu")
    np.testing.assert_allclose(dumped["video_float"], video, atol=1e-6)
    truncated = (video[0].transpose(1, 2, 3, 0) * 255).astype(np.uint8)
    assert np.abs(truncated.astype(int) - frames.astype(int)).max() <= 1


def test_frames_to_uint8_truncates_in_original_mode_and_rounds_otherwise():
    frames = torch.tensor([0.0, 0.5, 0.999, 1.0, 0.00392])
    assert frames_to_uint8(frames, "original").tolist() == [0, 127, 254, 255, 0]
    assert frames_to_uint8(frames, "fixed").tolist() == [0, 128, 255, 255, 1]


def test_frames_to_uint8_agrees_with_the_writer_conversion():
    video = pytest.importorskip("vexpress_model.outputs.video")
    frames = torch.rand(4, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    frames[0, 0, 0] = torch.tensor([0.0, 1.0, 0.5])
    for compat in ("original", "fixed"):
        np.testing.assert_array_equal(frames_to_uint8(frames, compat).numpy(), video.to_uint8(frames.numpy(), compat))


def test_float_decode_output():
    models = make_fake_models()
    pipeline = VExpressPipeline(models)
    latents = torch.randn(1, 4, 6, 4, 4)
    chunks = list(pipeline.decode(latents, output="float"))
    assert all(c.dtype == np.float32 and c.shape[1:] == (32, 32, 3) for c in chunks)
    assert 0.0 <= min(c.min() for c in chunks) and max(c.max() for c in chunks) <= 1.0


def test_compile_switch_falls_back_to_eager_when_compiling_fails(monkeypatch):
    from torch._dynamo import exc as dynamo_exc

    models = make_fake_models()
    windows = context_windows(16, 8, 4, "original")
    settings = SamplingSettings(2, 3.5, 1, 1, 0)
    eager, _ = _run(VExpressPipeline(models), 16, windows, settings)

    def broken_compile(module, **kwargs):
        def call(*args, **kw):
            raise dynamo_exc.TorchDynamoException("no compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    pipeline = VExpressPipeline(models, compile_unet=True)
    compiled, _ = _run(pipeline, 16, windows, settings)
    torch.testing.assert_close(compiled, eager, atol=0, rtol=0)
    assert pipeline.unet_runner.compile_unet is False


def test_input_checks():
    models = make_fake_models()
    pipeline = VExpressPipeline(models)
    image, kps_images, audio = make_inputs(12)
    reference = pipeline.encode_reference(image)
    kps = pipeline.encode_kps(kps_images)
    tokens = pipeline.project_audio(audio)
    with pytest.raises(InputError):
        pipeline.sample(reference, kps, tokens[:10], context_windows(12, 8, 4))
    with pytest.raises(InputError):
        pipeline.sample(reference, kps, tokens, (range(0, 8),))  # frames 8..11 uncovered
    with pytest.raises(InputError):
        pipeline.encode_kps(kps_images.astype(np.float32))
    with pytest.raises(InputError):
        pipeline.encode_reference(image[:30, :30])
