"""The denoising loop's pieces: the window accumulator (both variants, the all-reduce hook) and the UNet protocol."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from tests.test_pipeline_fakes import FakeUNet, FakeUNetOptions
from vexpress_model.pipeline.denoise import UNetLike
from vexpress_model.pipeline.windows import (
    OriginalWindowAccumulator,
    WindowAccumulator,
    context_windows,
    frame_window_counts,
    make_accumulator,
)


def _windows_and_predictions(dtype: torch.dtype):
    windows = context_windows(20, 8, 3)
    counts = torch.tensor(frame_window_counts(20, windows)).view(1, 1, 20, 1, 1)
    generator = torch.Generator().manual_seed(0)
    guided = [torch.randn(1, 4, 8, 2, 3, generator=generator).to(dtype) for _ in windows]
    return windows, counts, guided


def test_fixed_accumulator_is_the_float32_mean_over_windows():
    windows, counts, guided = _windows_and_predictions(torch.float16)
    like = torch.zeros(1, 4, 20, 2, 3)
    accumulator = make_accumulator("fixed", like, counts)
    assert type(accumulator) is WindowAccumulator and accumulator.sums.dtype == torch.float32
    for window, prediction in zip(windows, guided):
        accumulator.add(window, prediction)
    expected = torch.zeros(1, 4, 20, 2, 3)
    for window, prediction in zip(windows, guided):
        expected[:, :, window.start : window.stop] += prediction.float()
    torch.testing.assert_close(accumulator.result(), expected / counts, atol=0, rtol=0)
    accumulator.reset()
    assert not accumulator.sums.any()


def test_original_accumulator_divides_first_and_sums_in_the_run_dtype():
    windows, counts, guided = _windows_and_predictions(torch.float16)
    like = torch.zeros(1, 4, 20, 2, 3, dtype=torch.float16)
    accumulator = make_accumulator("original", like, counts)
    assert isinstance(accumulator, OriginalWindowAccumulator) and accumulator.sums.dtype == torch.float16
    expected = torch.zeros_like(like)
    for window, prediction in zip(windows, guided):
        accumulator.add(window, prediction)
        expected[:, :, window.start : window.stop] += prediction / counts[:, :, window.start : window.stop]
    assert torch.equal(accumulator.result(), expected)


def test_all_reduce_sums_the_partial_sums_once_per_call(monkeypatch):
    windows, counts, guided = _windows_and_predictions(torch.float32)
    accumulator = make_accumulator("fixed", torch.zeros(1, 4, 20, 2, 3), counts)
    accumulator.add(windows[0], guided[0])
    before = accumulator.sums.clone()
    accumulator.all_reduce(None)  # no group: nothing happens
    assert torch.equal(accumulator.sums, before)

    import torch.distributed as dist

    calls = []

    def fake_all_reduce(tensor, op=None, group=None):
        calls.append((op, group))
        tensor.mul_(2)  # as if a second process held the same partial sums

    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    accumulator.all_reduce("group")
    assert calls == [(dist.ReduceOp.SUM, "group")]
    assert torch.equal(accumulator.sums, before * 2)


def test_the_real_and_the_stand_in_unet_satisfy_the_protocol(parity_model_dir):
    from vexpress_model.models import load_vexpress_models

    assert isinstance(FakeUNet(), UNetLike)
    models = load_vexpress_models(parity_model_dir, device="cpu", dtype=torch.float32)
    assert isinstance(models.denoising_unet, UNetLike)


def _keyword_only(function) -> list[str]:
    return [p.name for p in inspect.signature(function).parameters.values() if p.kind is p.KEYWORD_ONLY]


def test_the_stand_in_unet_takes_the_keyword_options_of_the_protocol_and_the_real_unet():
    from vexpress_model.models.unet import DenoisingUNet

    keywords = _keyword_only(UNetLike.__call__)
    assert [f.name for f in dataclasses.fields(FakeUNetOptions)] == keywords == _keyword_only(DenoisingUNet.forward)
    with pytest.raises(TypeError, match="audio_weight"):
        FakeUNetOptions(audio_weight=1.0)


@pytest.mark.parametrize("compat", ["fixed", "original"])
def test_make_accumulator_picks_the_variant(compat):
    accumulator = make_accumulator(compat, torch.zeros(1, 4, 3, 1, 1), torch.ones(1, 1, 3, 1, 1))
    assert isinstance(accumulator, OriginalWindowAccumulator) == (compat == "original")
