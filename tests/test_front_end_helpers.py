"""The pieces the command lines and the nodes share: typed audio input of ``generate``, sampling settings from
user values, and the entry helper's exit codes and one-line messages."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tests.test_pipeline_fakes import make_fake_models, make_inputs
from vexpress_model.conditioning.audio_features import (
    AudioTokens,
    AudioWindows,
    Wav2Vec2Features,
    Waveform16k,
    as_audio_input,
)
from vexpress_model.entry import EXIT_INTERRUPTED, EXIT_USER_ERROR, run_command
from vexpress_model.errors import GenerationCancelled, InputError
from vexpress_model.pipeline.hooks import SamplingSettings
from vexpress_model.pipeline.sampler import VExpressPipeline
from vexpress_model.pipeline.windows import plan_frames


def test_bare_arrays_become_typed_audio_by_rank():
    assert isinstance(as_audio_input(np.zeros(1600, np.float32)), Waveform16k)
    assert isinstance(as_audio_input(np.zeros((4, 10, 6), np.float32)), AudioWindows)
    features = Wav2Vec2Features(np.zeros((50, 6), np.float32))
    assert as_audio_input(features) is features
    with pytest.raises(InputError, match="rank 2"):
        as_audio_input(np.zeros((50, 6), np.float32))


def test_generate_takes_windows_or_ready_tokens_with_the_same_result():
    models = make_fake_models()
    image, kps_images, windows = make_inputs(12)
    plan = plan_frames(0.4, 30, 8, 4)
    settings = SamplingSettings(2, 3.5, 1, 1, 0)
    pipeline = VExpressPipeline(models)
    from_windows = np.concatenate(list(pipeline.generate(image, kps_images, AudioWindows(windows), plan, settings)))
    tokens = pipeline.project_audio(windows)
    calls_before = pipeline.stats["unet_calls"]
    from_tokens = np.concatenate(list(pipeline.generate(image, kps_images, AudioTokens(tokens), plan, settings)))
    bare = np.concatenate(list(pipeline.generate(image, kps_images, windows, plan, settings)))
    assert from_windows.shape == (12, 32, 32, 3)
    assert np.array_equal(from_windows, from_tokens) and np.array_equal(from_windows, bare)
    assert pipeline.stats["unet_calls"] > calls_before


def test_sampling_settings_from_user_values():
    settings = SamplingSettings.from_values("20", 2.5, np.float32(0.95), 3, 7.0)
    assert (settings.num_inference_steps, settings.guidance_scale, settings.audio_attention_weight, settings.seed) == (
        20, 2.5, 3.0, 7)
    assert settings.reference_attention_weight == pytest.approx(0.95)
    assert isinstance(settings.num_inference_steps, int) and isinstance(settings.audio_attention_weight, float)
    with pytest.raises(InputError, match="guidance_scale must be a finite number"):
        SamplingSettings.from_values(25, float("nan"), 1.0, 1.0, 42)
    with pytest.raises(InputError, match="audio_attention_weight"):
        SamplingSettings.from_values(25, 3.5, 1.0, float("inf"), 42)
    with pytest.raises(InputError, match="num_inference_steps"):
        SamplingSettings.from_values(0, 3.5, 1.0, 1.0, 42)


def test_entry_helper_exit_codes_and_one_line_messages(capsys):
    assert run_command(lambda: None, log_level=logging.INFO) == 0
    assert run_command(lambda: 1) == 1

    def bad_input() -> None:
        raise InputError("the audio file x.wav is empty;\n  record some speech")

    assert run_command(bad_input) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: the audio file x.wav is empty; record some speech\n"

    def interrupted() -> None:
        raise KeyboardInterrupt

    def cancelled() -> None:
        raise GenerationCancelled("generation cancelled")

    assert run_command(interrupted, interrupted_message="stopped") == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "stopped\n"
    assert run_command(cancelled) == EXIT_INTERRUPTED

    def bug() -> None:
        raise RuntimeError("a programming error keeps its traceback")

    with pytest.raises(RuntimeError):
        run_command(bug)
