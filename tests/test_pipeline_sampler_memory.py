"""The windowed sampler on stand-in networks, its stages and memory: each stage entered through the placement with
only its networks (and its activation bytes), offloading, the memory budget and window batches, where kps features
live for long clips, and the audio stages the nodes run one by one (split from test_pipeline_sampler.py)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch
from torch import nn

from tests.test_pipeline_fakes import make_fake_models, make_inputs
from tests.test_pipeline_sampler import STEPS, _run
from vexpress_model.conditioning.audio_features import AudioTokens, Wav2Vec2Features, Waveform16k
from vexpress_model.errors import GenerationCancelled
from vexpress_model.pipeline.hooks import Hooks, SamplingSettings
from vexpress_model.pipeline.memory import ModulePlacement, module_device
from vexpress_model.pipeline.sampler import VExpressPipeline
from vexpress_model.pipeline.windows import balanced_batches, context_windows, plan_frames


def test_memory_budget_limits_windows_per_call():
    models = make_fake_models()
    windows = context_windows(40, 8, 4, "original")
    # Budget for about two windows: the call count must follow.
    from vexpress_model.pipeline.memory import estimate_unet_bytes_per_image

    per_window = estimate_unet_bytes_per_image(16, 16, torch.float32) * 8 * 2
    pipeline = VExpressPipeline(models, memory_budget_bytes=2 * per_window + 1)
    _run(pipeline, 40, windows, SamplingSettings(STEPS, 3.5, 1.0, 1.0, 0))
    assert pipeline.stats["unet_calls"] == STEPS * 5  # 9 windows in batches of at most 2


def test_balanced_batches():
    windows = context_windows(300, 24, 4)
    assert [len(b) for b in balanced_batches(windows, 5)] == [5, 5, 5]
    assert [len(b) for b in balanced_batches(windows, 4)] == [4, 4, 4, 3]
    assert [w for b in balanced_batches(windows, 4) for w in b] == list(windows)
    assert balanced_batches(windows, 100) == [list(windows)]


class RecordingPlacement:
    def __init__(self) -> None:
        self.stages: list[tuple[str, tuple[str, ...]]] = []
        self.events: list[str] = []
        self.finished = 0

    def enter_stage(self, name: str, modules: Mapping[str, nn.Module], *, activation_bytes: int = 0) -> None:
        self.stages.append((name, tuple(modules)))
        self.events.append(f"+{name}")

    def exit_stage(self, name: str, modules: Mapping[str, nn.Module]) -> None:
        self.events.append(f"-{name}")

    def finish(self) -> None:
        self.finished += 1


def test_pipeline_enters_each_stage_with_only_its_networks():
    models = make_fake_models()
    placement = RecordingPlacement()
    pipeline = VExpressPipeline(models, placement=placement)
    image, kps_images, audio = make_inputs(12)
    chunks = pipeline.generate(image, kps_images, audio, plan_frames(0.4, 30, 8, 4), SamplingSettings(2, 3.5, 1, 1, 0))
    list(chunks)
    pipeline.finish()
    assert placement.stages == [
        ("reference", ("vae", "reference_net")),
        ("kps", ("kps_guider",)),
        ("audio", ("audio_projection",)),
        ("denoise", ("denoising_unet",)),
        ("decode", ("vae",)),
    ]
    assert placement.events == ["+reference", "-reference", "+kps", "-kps", "+audio", "-audio", "+denoise",
                                "-denoise", "+decode", "-decode"]
    assert placement.finished == 1


def test_stage_exit_is_reported_after_a_cancel():
    models = make_fake_models()
    placement = RecordingPlacement()
    pipeline = VExpressPipeline(models, placement=placement)
    image, kps_images, audio = make_inputs(12)
    reference = pipeline.encode_reference(image)
    kps = pipeline.encode_kps(kps_images)
    tokens = pipeline.project_audio(audio)
    with pytest.raises(GenerationCancelled):
        pipeline.sample(reference, kps, tokens, context_windows(12, 8, 4), hooks=Hooks(cancel=lambda: True))
    assert placement.events[-2:] == ["+denoise", "-denoise"]


def _devices(models) -> dict[str, str]:
    roles = ("vae", "reference_net", "kps_guider", "audio_projection", "denoising_unet")
    return {role: module_device(getattr(models, role)).type for role in roles}


def test_offload_moves_every_other_network_off_the_device():
    # "meta" stands in for the host: a module moved there has visibly left the compute device.
    models = make_fake_models()
    placement = ModulePlacement("cpu", offload=True, offload_device="meta")
    placement.enter_stage("reference", {"vae": models.vae, "reference_net": models.reference_net})
    placement.enter_stage("kps", {"kps_guider": models.kps_guider})
    assert _devices(models) == {"vae": "meta", "reference_net": "meta", "kps_guider": "cpu",
                                "audio_projection": "cpu", "denoising_unet": "cpu"}
    placement.enter_stage("audio", {"audio_projection": models.audio_projection})
    assert _devices(models)["kps_guider"] == "meta"
    placement.finish()
    assert _devices(models)["audio_projection"] == "meta"

    # exit_stage: the stage's networks leave as soon as it ends.
    models = make_fake_models()
    placement = ModulePlacement("cpu", offload=True, offload_device="meta")
    stage = {"denoising_unet": models.denoising_unet}
    placement.enter_stage("denoise", stage)
    assert _devices(models)["denoising_unet"] == "cpu"
    placement.exit_stage("denoise", stage)
    assert _devices(models)["denoising_unet"] == "meta"

    models = make_fake_models()
    keep = ModulePlacement("cpu", offload=False, offload_device="meta")
    keep.enter_stage("reference", {"vae": models.vae, "reference_net": models.reference_net})
    keep.enter_stage("kps", {"kps_guider": models.kps_guider})
    keep.exit_stage("kps", {"kps_guider": models.kps_guider})
    keep.finish()
    assert set(_devices(models).values()) == {"cpu"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_offload_on_cuda_holds_only_the_stage_networks():
    models = make_fake_models()
    pipeline = VExpressPipeline(models, device="cuda", offload=True)
    image, kps_images, audio = make_inputs(12)
    seen = {}
    original_forward = models.denoising_unet.forward

    def spy(*args, **kwargs):
        seen.update(_devices(models))
        return original_forward(*args, **kwargs)

    models.denoising_unet.forward = spy
    list(pipeline.generate(image, kps_images, audio, plan_frames(0.4, 30, 8, 4), SamplingSettings(2, 3.5, 1, 1, 0)))
    pipeline.finish()
    assert seen == {"vae": "cpu", "reference_net": "cpu", "kps_guider": "cpu", "audio_projection": "cpu",
                    "denoising_unet": "cuda"}
    assert set(_devices(models).values()) == {"cpu"}


def test_offload_result_equals_keep_all():
    models = make_fake_models()
    windows = context_windows(24, 8, 4, "original")
    settings = SamplingSettings(2, 3.5, 0.95, 3.0, 4)
    keep, _ = _run(VExpressPipeline(models), 24, windows, settings)
    pipeline = VExpressPipeline(models, offload=True)
    offloaded, (_, kps, _) = _run(pipeline, 24, windows, settings)
    assert kps.features.device.type == "cpu"
    torch.testing.assert_close(offloaded, keep, atol=0, rtol=0)


def test_long_clips_keep_kps_features_in_host_memory():
    """Device memory must not grow with the audio length: kps features over the budget stay on the host (and with
    offloading always), and sampling reads them from there with the same result."""
    models = make_fake_models()
    image, kps_images, audio = make_inputs(12)
    plan = plan_frames(0.4, 30, 8, 4)
    settings = SamplingSettings(2, 3.5, 1, 1, 0)
    results, stores = [], []
    for budget in (1 << 40, 0):
        pipeline = VExpressPipeline(models, device="cpu")
        pipeline.memory.condition_device_budget_bytes = budget
        pipeline.memory.device = torch.device("meta") if budget else pipeline.device  # only for the placement decision
        stores.append(pipeline.memory.condition_device(1 << 20).type)
        pipeline.memory.device = torch.device("cpu")
        results.append(np.concatenate(list(pipeline.generate(image, kps_images, audio, plan, settings))))
    assert stores == ["meta", "cpu"]
    assert np.array_equal(results[0], results[1])
    assert VExpressPipeline(models, device="cpu", offload=True).memory.condition_device_budget_bytes == 0


# ------------------------------------------------------------------------------- stages for the nodes (issue 5)


@pytest.fixture(scope="module")
def models_with_wav2vec2(parity_model_dir):
    """The stand-in networks plus the tiny parity wav2vec2 (48 features), so the audio encoder stage runs for real."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    folder = parity_model_dir / "wav2vec2-base-960h"
    models = make_fake_models(audio_in=48)
    models.audio_encoder = Wav2Vec2Model.from_pretrained(folder).eval()
    models.audio_feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    return models


def test_audio_stages_compose_to_encode_audio(models_with_wav2vec2):
    from tests import media
    from vexpress_model.conditioning.audio_features import audio_windows, wav2vec2_features

    models = models_with_wav2vec2
    waveform = media.speech_like(1.2, 16000)[0]
    placement = RecordingPlacement()
    pipeline = VExpressPipeline(models, placement=placement)
    features = pipeline.audio_features(waveform)
    expected = wav2vec2_features(models.audio_encoder, models.audio_feature_extractor, waveform)
    torch.testing.assert_close(features, expected, atol=0, rtol=0)
    dumped = {}
    hooks = Hooks(dump=lambda name, array: dumped.__setitem__(name, array))
    # Features kept in host memory (the AudioEmbed node's output) give the same tokens.
    tokens = pipeline.encode_audio(Wav2Vec2Features(features.cpu()), 36, hooks)
    assert tokens.shape == (36, 5, 12) and set(dumped) == {"audio_proj_output"}
    torch.testing.assert_close(tokens, pipeline.project_audio(audio_windows(features, 36, num_pad=2)), atol=0, rtol=0)
    torch.testing.assert_close(pipeline.encode_audio(Waveform16k(waveform), 36), tokens, atol=0, rtol=0)
    # A bare waveform [N] is one too; ready tokens are returned as they are.
    torch.testing.assert_close(pipeline.encode_audio(waveform, 36), tokens, atol=0, rtol=0)
    assert pipeline.encode_audio(AudioTokens(tokens), 36) is tokens
    assert placement.stages[:2] == [("audio", ("audio_encoder",)), ("audio", ("audio_projection",))]
    assert placement.events[:4] == ["+audio", "-audio", "+audio", "-audio"]


def test_audio_features_checks_cancel_before_loading_the_encoder(models_with_wav2vec2):
    placement = RecordingPlacement()
    pipeline = VExpressPipeline(models_with_wav2vec2, placement=placement)
    with pytest.raises(GenerationCancelled):
        pipeline.audio_features(np.zeros(16000, np.float32), Hooks(cancel=lambda: True))
    assert placement.stages == []


class ReservingPlacement(RecordingPlacement):
    """Asks the pipeline for the stage's activation memory as it enters a stage (what the ComfyUI placement does)."""

    def __init__(self) -> None:
        super().__init__()
        self.pipeline: VExpressPipeline | None = None
        self.reserved: dict[str, int] = {}

    def enter_stage(self, name: str, modules: Mapping[str, nn.Module], *, activation_bytes: int = 0) -> None:
        super().enter_stage(name, modules, activation_bytes=activation_bytes)
        self.reserved[name] = activation_bytes


@pytest.mark.parametrize("guidance, halves", [(3.5, 2), (1.0, 1)])
def test_denoise_stage_reserves_the_window_estimate(guidance, halves):
    from vexpress_model.pipeline.memory import estimate_unet_bytes_per_image

    models = make_fake_models()
    placement = ReservingPlacement()
    pipeline = VExpressPipeline(models, placement=placement)
    placement.pipeline = pipeline
    _run(pipeline, 20, context_windows(20, 8, 2), SamplingSettings(2, guidance, 1, 1, 0))
    # 32x32 images: 4x4 latents; the stand-in UNet's first block has 16 channels; 8-frame windows.
    expected = estimate_unet_bytes_per_image(16, 16, torch.float32) * 8 * halves
    assert placement.reserved == {"reference": 0, "kps": 0, "audio": 0, "denoise": expected}


def test_window_batch_is_sized_after_the_unet_is_loaded(monkeypatch):
    """On a GPU the budget is the free memory: it must be measured once the denoise stage has loaded the UNet."""
    models = make_fake_models()
    placement = RecordingPlacement()
    pipeline = VExpressPipeline(models, placement=placement)
    measured_after: list[list[str]] = []

    def budget() -> int:
        measured_after.append(list(placement.events))
        return 1 << 40

    monkeypatch.setattr(pipeline.memory, "memory_budget", budget)
    _run(pipeline, 40, context_windows(40, 8, 4, "original"), SamplingSettings(2, 3.5, 1, 1, 0))
    assert len(measured_after) == 1 and measured_after[0][-1] == "+denoise"
    assert pipeline.stats["unet_calls"] == 2  # every window in one call per step
    # The overrides still decide: a fixed batch size measures nothing, a fixed budget replaces the measurement.
    fixed = VExpressPipeline(models, window_batch_size=3)
    monkeypatch.setattr(fixed.memory, "memory_budget",
                        lambda: pytest.fail("free memory measured despite window_batch_size"))
    _run(fixed, 40, context_windows(40, 8, 4, "original"), SamplingSettings(2, 3.5, 1, 1, 0))
    assert fixed.stats["unet_calls"] == 2 * 3  # 9 windows in 3 calls per step
    tight = VExpressPipeline(models, memory_budget_bytes=1)
    _run(tight, 40, context_windows(40, 8, 4, "original"), SamplingSettings(2, 3.5, 1, 1, 0))
    assert tight.stats["unet_calls"] == 2 * 9  # one window per call


def test_very_long_clips_recompute_kps_features_per_window():
    """Past the host budget, kps features drawn on demand are not stored but recomputed per window, with the same
    frames as a run that stores them, and the guider is placed beside the UNet for it."""
    models = make_fake_models()
    image, kps_images, audio = make_inputs(20)
    plan = plan_frames(20 / 30, 30, 8, 4)
    settings = SamplingSettings(2, 3.5, 1, 1, 0)
    source = lambda start, stop: kps_images[start:stop]  # noqa: E731 -- drawn on demand, as the CLI does
    results, calls = [], []
    for budget in (1 << 40, 0):
        pipeline = VExpressPipeline(models, device="cpu")
        pipeline.memory.host_condition_budget_bytes = budget
        kps = pipeline.encode_kps(source, plan.num_frames)
        assert (kps.compute is None) == bool(budget)
        assert kps.features.shape[2] == (plan.num_frames if budget else 1)
        results.append(np.concatenate(list(pipeline.generate(image, source, audio, plan, settings))))
        calls.append(pipeline.stats["kps_guider_calls"])
    assert np.abs(results[1].astype(int) - results[0].astype(int)).max() <= 1
    assert calls[1] > calls[0], "the lazy run must have recomputed features during sampling"

    # The guider must be placed on the device beside the UNet (with offloading it would be gone otherwise).
    stages = []

    class RecordingPlacement(ModulePlacement):
        def enter_stage(self, name, modules, *, activation_bytes=0):
            stages.append((name, sorted(modules)))
            super().enter_stage(name, modules, activation_bytes=activation_bytes)

    pipeline = VExpressPipeline(models, device="cpu", placement=RecordingPlacement("cpu", offload=True))
    pipeline.memory.host_condition_budget_bytes = 0
    list(pipeline.generate(image, source, audio, plan, settings))
    assert ("denoise", ["denoising_unet", "kps_guider"]) in stages
