"""wav2vec2 features (normalisation, last hidden state, chunked = one pass) and per-frame audio windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests import media
from vexpress_model.conditioning.audio_features import audio_windows, normalize_waveform, wav2vec2_features
from vexpress_model.errors import InputError

CASES = (("S1_fix_face", 24), ("S2_no_retarget", 32))


@pytest.fixture(scope="module")
def tiny_wav2vec2(parity_model_dir: Path):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    folder = parity_model_dir / "wav2vec2-base-960h"
    return Wav2Vec2Model.from_pretrained(folder).eval(), Wav2Vec2FeatureExtractor.from_pretrained(folder)


@pytest.mark.parametrize("case, frames", CASES)
def test_normalisation_matches_the_original(parity_dir: Path, tiny_wav2vec2, case: str, frames: int) -> None:
    outputs = parity_dir / "outputs" / case
    values = normalize_waveform(tiny_wav2vec2[1], np.load(outputs / "audio_waveform_16k.npy"))
    np.testing.assert_array_equal(values, np.load(outputs / "audio_input_values.npy")[0])


@pytest.mark.parametrize("case, frames", CASES)
@pytest.mark.parametrize("chunk_seconds", [None, 0.3])
def test_last_hidden_state_matches_the_original(
    parity_dir: Path, tiny_wav2vec2, case: str, frames: int, chunk_seconds: float | None
) -> None:
    outputs = parity_dir / "outputs" / case
    encoder, extractor = tiny_wav2vec2
    features = wav2vec2_features(encoder, extractor, np.load(outputs / "audio_waveform_16k.npy"), chunk_seconds)
    expected = np.load(outputs / "wav2vec_last_hidden_state.npy")[0]
    assert features.shape == expected.shape and features.dtype == torch.float32
    assert np.abs(features.numpy() - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("case, frames", CASES)
def test_windows_match_the_original(parity_dir: Path, case: str, frames: int) -> None:
    outputs = parity_dir / "outputs" / case
    hidden = np.load(outputs / "wav2vec_last_hidden_state.npy")[0]
    windows = audio_windows(hidden, frames)
    np.testing.assert_array_equal(windows.numpy(), np.load(outputs / "audio_proj_input.npy"))


def test_chunked_equals_one_pass_on_a_long_clip(tiny_wav2vec2) -> None:
    encoder, extractor = tiny_wav2vec2
    waveform = media.speech_like(5.3, 16000, seed=5)[0]
    whole = wav2vec2_features(encoder, extractor, waveform, chunk_seconds=None)
    chunked = wav2vec2_features(encoder, extractor, waveform, chunk_seconds=0.7)
    assert whole.shape == (264, 48)  # floor((N - 400) / 320) + 1
    assert (whole - chunked).abs().max() <= 1e-5 * whole.abs().max()


def test_chunked_layer_norm_front_end() -> None:
    """The 'layer' feature-encoder variant (per-frame LayerNorm in every conv layer) chunks exactly too."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    )
    encoder = Wav2Vec2Model(config).eval()
    waveform = media.speech_like(3.1, 16000, seed=2)[0]
    extractor = Wav2Vec2FeatureExtractor()
    whole = wav2vec2_features(encoder, extractor, waveform, chunk_seconds=None)
    chunked = wav2vec2_features(encoder, extractor, waveform, chunk_seconds=0.5)
    assert (whole - chunked).abs().max() <= 1e-5 * whole.abs().max()


def test_window_layout() -> None:
    """Frame i takes interpolated rows 2i-4 .. 2i+5; rows beyond the clip are zeros."""
    frames, dim = 6, 3
    features = torch.arange(2 * frames, dtype=torch.float32)[:, None].repeat(1, dim)  # already 2 rows per frame
    windows = audio_windows(features, frames)
    assert windows.shape == (frames, 10, dim)
    np.testing.assert_array_equal(windows[0, :4].numpy(), 0)
    np.testing.assert_array_equal(windows[0, 4:, 0].numpy(), [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(windows[3, :, 0].numpy(), np.arange(2, 12))
    np.testing.assert_array_equal(windows[5, 6:].numpy(), 0)
    assert audio_windows(features.half(), frames).dtype == torch.float16
    assert audio_windows(features, frames, num_pad=1).shape == (frames, 6, dim)


def test_too_short_or_empty_audio(tiny_wav2vec2) -> None:
    encoder, extractor = tiny_wav2vec2
    with pytest.raises(InputError, match="too short"):
        wav2vec2_features(encoder, extractor, np.full(300, 0.1, np.float32))
    with pytest.raises(InputError, match="non-empty"):
        wav2vec2_features(encoder, extractor, np.zeros(0, np.float32))
