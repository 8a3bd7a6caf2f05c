"""The ComfyUI nodes through their V3 interface, in-process, with a tiny random-weight model on CPU.

Needs ``COMFYUI_PATH`` (see ``tests/comfy_harness.py``); skipped with a how-to message otherwise. The stages run
for real: ComfyUI's ``ModelPatcher`` / ``load_models_gpu`` memory management, its ProgressBar hook (with
previews) and interrupt flag, the insightface stand-in detector, and the H.264 + AAC writer. The kps nodes:
test_nodes_comfy_kps.py; the fixtures both use are in conftest.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from fractions import Fraction

import pytest

from tests import comfy_harness
from tests.comfy_nodes import FPS, SAMPLER_SMALL, run_sampler

pytestmark = pytest.mark.comfyui
if comfy_harness.comfyui_path() is None:
    pytest.skip(f"ComfyUI node tests need a ComfyUI checkout: {comfy_harness.HOW_TO}", allow_module_level=True)


@pytest.fixture(scope="session")
def generated(node, pipe, portrait, embeds, fix_face_kps):
    """One sampler run, watched: its ProgressBar updates (the server's hook) and its load_models_gpu calls."""
    import comfy.model_management as mm
    import comfy.utils

    events: list[tuple[int, int, object]] = []
    calls: list[tuple[list[str], int, bool]] = []
    original = mm.load_models_gpu

    def spy(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None, force_full_load=False):
        calls.append(([m.model.role for m in models], memory_required, force_full_load))
        return original(models, memory_required=memory_required, force_patch_weights=force_patch_weights,
                        minimum_memory_required=minimum_memory_required, force_full_load=force_full_load)

    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, **_: events.append((value, total, preview)))
    mm.load_models_gpu = spy
    try:
        images, fps = run_sampler(node, pipe, portrait, fix_face_kps[0], embeds)
    finally:
        mm.load_models_gpu = original
        comfy.utils.set_progress_bar_global_hook(previous)
    return {"images": images, "fps": fps, "events": events, "calls": calls}


# ------------------------------------------------------------------------------------------- registration


def test_entrypoint_lists_every_node_with_unique_pack_ids(pack, node):
    from comfy_api.latest import ComfyExtension

    extension = asyncio.run(pack.comfy_entrypoint())
    assert isinstance(extension, ComfyExtension)
    classes = asyncio.run(extension.get_node_list())
    ids = [cls.GET_SCHEMA().node_id for cls in classes]
    assert ids == [
        "LoadVExpressModels", "VExpressAudioEmbed", "VExpressExtractKps", "VExpressLoadKps", "VExpressSaveKps",
        "VExpressRetargetKps", "VExpressFaceCrop", "VExpressPasteBack", "VExpressSampler", "VExpressSaveVideo",
    ]
    assert all(i == "LoadVExpressModels" or i.startswith("VExpress") for i in ids)
    for cls in classes:
        schema = cls.GET_SCHEMA()
        assert schema.category.startswith("V-Express/")
        assert schema.description and len(schema.description) > 40


def test_every_input_and_output_has_a_tooltip(pack):
    classes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    for cls in classes:
        info = cls.GET_NODE_INFO_V1()
        for group in ("required", "optional"):
            for name, spec in info["input"].get(group, {}).items():
                assert spec[1].get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
        assert all(info["output_tooltips"]), f"{cls.__name__} has an output without tooltip"


def test_locale_en_matches_the_schemas(pack):
    """The schemas take their texts from locales/en/nodeDefs.json (nodes/_texts.py), so what /object_info says
    equals what the frontend shows from the locale."""
    locale = json.loads((comfy_harness.REPO_ROOT / "locales" / "en" / "nodeDefs.json").read_text())
    classes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    assert set(locale) == {cls.GET_SCHEMA().node_id for cls in classes}
    for cls in classes:
        schema = cls.GET_SCHEMA()
        entry = locale[schema.node_id]
        assert entry["display_name"] == schema.display_name
        assert entry["description"] == schema.description
        for item in schema.inputs:
            assert entry["inputs"][item.id] == {"name": item.display_name or item.id, "tooltip": item.tooltip}
        for index, item in enumerate(schema.outputs):
            assert entry["outputs"][str(index)] == {"name": item.display_name, "tooltip": item.tooltip}


def test_model_folders_registered_and_listed(node, dirs):
    import folder_paths

    for key in ("vexpress", "vae", "transformers", "audio_encoders", "insightface"):
        assert folder_paths.get_folder_paths(key), key
    assert "tiny" in node("loader").model_folder_options()


# ---------------------------------------------------------------------------------------------- generation


def test_fix_face_video_end_to_end(node, dirs, embeds, generated):
    import av

    images, fps = generated["images"], generated["fps"]
    assert images.shape == (embeds[2], 64, 64, 3) and images.dtype.is_floating_point
    assert fps == FPS and float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    out = node("video").VExpressSaveVideo.execute(images=images, audio=embeds[1], fps=fps,
                                                   filename_prefix="vexpress/test", crf=23)
    item = out.ui.as_dict()["images"][0]
    assert item["subfolder"] == "vexpress" and item["type"] == "output"
    assert item["filename"].startswith("test_") and item["filename"].endswith("_.mp4")
    path = dirs["output"] / "vexpress" / item["filename"]
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and sound.codec_context.name == "aac"
        assert video.average_rate == Fraction(FPS) and video.frames == embeds[2]
    assert out.args[0].get_dimensions() == (64, 64)  # the VIDEO output (VideoFromFile)



@pytest.mark.parametrize(("rate", "channels"), [(48000, 2), (44100, 1)])
def test_saved_video_keeps_the_users_audio_rate_and_channels(node, dirs, pipe, generated, rate, channels):
    """The AUDIO goes through AudioEmbed (which encodes a 16 kHz mono copy) into SaveVideo: the MP4's AAC track has
    the user's own sample rate and channels."""
    import av
    import torch

    from tests import media

    user_audio = {"waveform": torch.from_numpy(media.speech_like(1.0, rate, channels=channels))[None],
                  "sample_rate": rate}
    embeds = node("audio").VExpressAudioEmbed.execute(pipe=pipe, audio=user_audio, fps=FPS)
    out = node("video").VExpressSaveVideo.execute(images=generated["images"][: embeds[2]], audio=embeds[1], fps=FPS,
                                                   filename_prefix=f"vexpress/rate_{rate}", crf=30)
    item = out.ui.as_dict()["images"][0]
    with av.open(str(dirs["output"] / item["subfolder"] / item["filename"])) as container:
        sound = container.streams.audio[0]
        assert (sound.rate, sound.codec_context.channels) == (rate, channels)


def test_saved_video_carries_the_prompt_and_workflow(node, dirs, embeds, generated, monkeypatch):
    """Like core SaveVideo: ``prompt`` and each extra_pnginfo key (``workflow``) as JSON tags, unless
    --disable-metadata."""
    import av
    from comfy.cli_args import args
    from comfy_api.latest import io

    prompt = {"3": {"class_type": "VExpressSampler", "inputs": {"seed": 42, "steps": 2}}}
    workflow = {"nodes": [{"id": 3, "type": "VExpressSampler"}], "links": [], "version": 0.4}
    hidden = {io.Hidden.prompt: prompt, io.Hidden.extra_pnginfo: {"workflow": workflow}}
    # What ComfyUI's executor hands over: the hidden values themselves up to 0.3.x, {"hidden_inputs": ...} (its
    # V3Data) since the V3 schema gained dynamic inputs (0.33 names the parameter v3_data).
    takes_v3_data = "v3_data" in inspect.signature(io.ComfyNode.PREPARE_CLASS_CLONE).parameters
    save = node("video").VExpressSaveVideo.PREPARE_CLASS_CLONE({"hidden_inputs": hidden} if takes_v3_data else hidden)

    def saved_tags(prefix: str) -> dict:
        out = save.execute(images=generated["images"][:4], audio=embeds[1], fps=FPS, filename_prefix=prefix, crf=30)
        item = out.ui.as_dict()["images"][0]
        with av.open(str(dirs["output"] / item["subfolder"] / item["filename"])) as container:
            return dict(container.metadata)

    tags = saved_tags("vexpress/meta")
    assert json.loads(tags["prompt"]) == prompt and json.loads(tags["workflow"]) == workflow
    monkeypatch.setattr(args, "disable_metadata", True)
    tags = saved_tags("vexpress/nometa")
    assert "prompt" not in tags and "workflow" not in tags


def test_progress_counts_unet_calls_and_shows_previews(generated):
    events = generated["events"]
    assert events and events[-1][0] == events[-1][1]
    assert [value for value, _, _ in events] == sorted(value for value, _, _ in events)
    previews = [p for _, _, p in events if p is not None]
    assert len(previews) == SAMPLER_SMALL["steps"] and previews[0][0] == "JPEG"


def test_frames_work_with_core_create_video(embeds, generated, tmp_path):
    import av
    from comfy_extras.nodes_video import CreateVideo

    video = CreateVideo.execute(images=generated["images"], fps=generated["fps"], audio=embeds[1])[0]
    video.save_to(str(tmp_path / "core.mp4"))
    with av.open(str(tmp_path / "core.mp4")) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
        assert container.streams.video[0].frames == embeds[2]


def test_each_stage_goes_through_load_models_gpu(generated, pipe, lib):
    calls = generated["calls"]
    roles = [tuple(r) for r, _, _ in calls]
    assert roles == [("vae", "reference_net"), ("kps_guider",), ("audio_projection",), ("denoising_unet",), ("vae",)]
    assert all(full for _, _, full in calls)
    # The UNet's activations for one 8-frame window of 8x8 latents, both CFG halves: the pipeline's own estimate.
    per_image = lib("pipeline.memory").estimate_unet_bytes_per_image(
        64, pipe.models.unet_config.block_out_channels[0], pipe.dtype
    )
    assert [m for _, m, _ in calls] == [0, 0, 0, per_image * SAMPLER_SMALL["context_frames"] * 2, 0]


def test_networks_left_off_the_device_are_moved_for_their_stage_only(node, pipe, monkeypatch):
    """--novram / --lowvram: ComfyUI may leave a plain module on the offload device; it runs on the device for its
    stage and goes back right after (simulated: load_models_gpu does nothing, the load device is 'cuda')."""
    import comfy.model_management as mm
    import torch

    placement_mod = node("memory_management")
    moves = []

    class Network(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def to(self, device):
            moves.append(str(device))
            return self

    class Patcher:
        load_device = torch.device("cuda", 0)
        offload_device = torch.device("cpu")

        def __init__(self, role):
            self.model = placement_mod._patcher_root_class(role)(role, Network())

    patchers = {"kps_guider": Patcher("kps_guider"), "vae": Patcher("vae")}
    monkeypatch.setattr(mm, "load_models_gpu", lambda *a, **k: None)
    placement = placement_mod.ComfyPlacement(patchers)
    placement.enter_stage("kps", {"kps_guider": patchers["kps_guider"].model.network})
    assert moves == ["cuda:0"]
    placement.enter_stage("decode", {"vae": patchers["vae"].model.network})
    assert moves == ["cuda:0", "cpu", "cuda:0"]  # the guider went back before the VAE came
    placement.finish()
    assert moves[-1] == "cpu" and not placement._forced


def test_second_run_reuses_the_loaded_models(node, pipe, portrait, embeds, fix_face_kps, generated, monkeypatch):
    import comfy.model_patcher

    loads = []
    original = comfy.model_patcher.ModelPatcher.load

    def spy(self, *args, **kwargs):
        loads.append(self.model.role)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(comfy.model_patcher.ModelPatcher, "load", spy)
    run_sampler(node, pipe, portrait, fix_face_kps[0], embeds, seed=7)
    assert loads == [], f"networks were loaded again: {loads}"


def test_offload_mode_takes_networks_off_after_the_run(node, dirs, portrait, embeds, fix_face_kps):
    import comfy.model_management as mm

    pipe = node("loader").LoadVExpressModels.execute(model="tiny", dtype="fp32", offload="offload",
                                                      download_missing=False)[0]
    assert pipe.offload
    run_sampler(node, pipe, portrait, fix_face_kps[0], embeds)
    loaded = {id(item.model) for item in mm.current_loaded_models}
    assert not loaded & {id(p) for p in pipe.patchers.values()}


def test_cancel_stops_the_sampler_within_one_unet_call(node, pipe, portrait, embeds, fix_face_kps, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    unet = pipe.models.denoising_unet
    calls = {"unet": 0}
    original_forward = unet.forward

    def counting_forward(*args, **kwargs):
        calls["unet"] += 1
        if calls["unet"] == 2:
            mm.interrupt_current_processing(True)  # what POST /interrupt does
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", counting_forward)
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda *a, **k: mm.throw_exception_if_processing_interrupted())
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_sampler(node, pipe, portrait, fix_face_kps[0], embeds, steps=50)
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        mm.interrupt_current_processing(False)
    assert calls["unet"] == 2


def test_original_compat_and_median_filter_run(node, pipe, portrait, embeds, fix_face_kps):
    images, fps = run_sampler(node, pipe, portrait, fix_face_kps[0], embeds, compat="original", median_filter="auto")
    assert images.shape[0] == embeds[2] and fps == FPS


# --------------------------------------------------------------------------------------------------- audio


def test_audio_embed_outputs(embeds, audio):
    features, used, frames, fps = embeds
    assert frames == round(audio["waveform"].shape[-1] / 16000 * FPS) and fps == FPS
    assert used["sample_rate"] == audio["sample_rate"] and used["waveform"].shape == audio["waveform"].shape
    assert features.num_frames == frames and features.features.ndim == 2


def test_audio_embed_stereo_44k_and_missing_audio(node, pipe, lib):
    import torch

    from tests import media

    InputError = lib("errors").InputError

    stereo = {"waveform": torch.from_numpy(media.speech_like(1.5, 44100, channels=2))[None], "sample_rate": 44100}
    features, used, frames, fps = node("audio").VExpressAudioEmbed.execute(pipe=pipe, audio=stereo, fps=25.0)
    assert frames == round(1.5 * 25) and used["waveform"].shape[1] == 2
    with pytest.raises(InputError, match="no audio"):
        node("audio").VExpressAudioEmbed.execute(pipe=pipe, audio=None, fps=25.0)


def test_audio_embed_compat_picks_the_resampler(node, pipe, lib):
    """compat "original" resamples 44.1 kHz stereo as the original did (torchaudio's sinc, channel by channel, then
    the mean); "fixed" uses the polyphase filter: the node's features are the library's for each, and they differ."""
    import torch

    from tests import media

    to_mono_16k = lib("inputs.audio").to_mono_16k
    waveform = media.speech_like(1.0, 44100, channels=2)
    stereo = {"waveform": torch.from_numpy(waveform)[None], "sample_rate": 44100}
    pipeline = lib("pipeline.sampler").VExpressPipeline(pipe.models, device="cpu")
    features = {}
    for compat in ("fixed", "original"):
        features[compat] = node("audio").VExpressAudioEmbed.execute(
            pipe=pipe, audio=stereo, fps=25.0, compat=compat
        )[0].features
        expected = pipeline.audio_features(to_mono_16k(waveform, 44100, compat=compat)).cpu()
        assert torch.allclose(features[compat], expected, atol=1e-6), compat
    assert (features["fixed"] - features["original"]).abs().max() > 1e-4


# -------------------------------------------------------------------------------------------------- loader


def test_loader_reports_missing_files_with_urls_and_paths(node, dirs, lib):
    import folder_paths

    ModelFolderError = lib("errors").ModelFolderError

    empty = dirs["models"] / "vexpress" / "empty"
    (empty / "v-express").mkdir(parents=True)
    (empty / "v-express" / "denoising_unet.bin").write_bytes(b"")  # listed, but incomplete
    assert "empty" in node("loader").model_folder_options()
    with pytest.raises(ModelFolderError) as error:
        node("loader").LoadVExpressModels.execute(model="empty", dtype="fp32", offload="auto", download_missing=False)
    message = str(error.value)
    # The table of missing files: name, size, where it goes; then where they come from and how to fetch them.
    rows = {line.split()[0]: line.split()[-1] for line in message.splitlines()[2:] if line.startswith("  ")}
    assert rows["reference_net.bin"] == str(empty / "v-express" / "reference_net.bin")
    assert "from https://huggingface.co/:" in message and "tk93/V-Express" in message
    assert message.splitlines()[-1].startswith("Turn on download_missing")
    assert folder_paths.get_folder_paths("vexpress")
